cwlVersion: v1.2
class: CommandLineTool
baseCommand: [bwa, mem]
hints:
  - $import: docker-bwa.yml
inputs:
  reads: File
outputs:
  bam: stdout
