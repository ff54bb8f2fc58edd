cwlVersion: v1.2
class: Workflow
requirements:
  DockerRequirement:
    dockerPull: alpine:3.19
inputs: []
outputs: []
steps:
  a:
    run: ../tools/echo.cwl
    in: {}
    out: []
  b:
    run:
      class: CommandLineTool
      baseCommand: "true"
      hints:
        - class: DockerRequirement
          dockerPull: ignored/by-requirement:1
      inputs: []
      outputs: []
    in: {}
    out: []
