cwlVersion: v1.2
class: CommandLineTool
baseCommand: [wc, -l]
hints:
  SoftwareRequirement:
    packages:
      - package: coreutils
        version: ["9.1"]
      - package: gawk
inputs:
  bam: File
outputs: []
