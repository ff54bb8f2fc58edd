cwlVersion: v1.2
class: CommandLineTool
baseCommand: "true"
requirements:
  DockerRequirement:
    dockerImageId: local/prebuilt:2024
inputs: []
outputs: []
