cwlVersion: v1.2
class: Workflow
inputs: []
outputs: []
steps:
  load:
    run:
      class: CommandLineTool
      baseCommand: "true"
      requirements:
        DockerRequirement:
          dockerLoad: https://example.org/images/tool.tar
          dockerImageId: tool:1
      inputs: []
      outputs: []
    in: []
    out: []
  import:
    run:
      class: CommandLineTool
      baseCommand: "true"
      requirements:
        DockerRequirement:
          dockerImport: rootfs.tar.gz
      inputs: []
      outputs: []
    in: []
    out: []
  build:
    run:
      class: CommandLineTool
      baseCommand: "true"
      requirements:
        DockerRequirement:
          dockerFile: |
            FROM debian:12
            RUN apt-get update
          dockerImageId: built:latest
      inputs: []
      outputs: []
    in: []
    out: []
  remote:
    run: https://example.org/tools/remote.cwl
    in: []
    out: []
