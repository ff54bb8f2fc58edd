cwlVersion: v1.2
class: CommandLineTool
baseCommand: "true"
hints:
  - class: https://w3id.org/cwl/cwl#DockerRequirement
    dockerImageId: my-python
    dockerPull: docker://python:3.12-slim
inputs: []
outputs: []
