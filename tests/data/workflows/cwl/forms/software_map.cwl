cwlVersion: v1.2
class: CommandLineTool
baseCommand: samtools
requirements:
  - class: SoftwareRequirement
    packages:
      samtools:
        version: ["1.15", "1.16"]
      htslib:
        specs: ["https://identifiers.org/rrid/RRID:SCR_002105"]
inputs: []
outputs: []
