cwlVersion: v1.2
class: CommandLineTool
baseCommand: [samtools, sort]
hints:
  DockerRequirement:
    # overridden: the step that runs this tool has a DockerRequirement in its requirements
    dockerPull: samtools:0.1.19
inputs:
  bam: File
outputs:
  sorted: stdout
