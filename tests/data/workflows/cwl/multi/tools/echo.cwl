cwlVersion: v1.2
class: CommandLineTool
baseCommand: echo
requirements:
  DockerRequirement:
    dockerPull: busybox:1.36
inputs: []
outputs: []
