cwlVersion: v1.2
class: Workflow
inputs: []
outputs: []
steps:
  one:
    run:
      class: CommandLineTool
      baseCommand: "true"
      hints: &docker
        DockerRequirement:
          dockerPull: ubuntu:22.04
      inputs: []
      outputs: []
    in: []
    out: []
  two:
    run:
      class: CommandLineTool
      baseCommand: "true"
      hints: *docker
      inputs: []
      outputs: []
    in: []
    out: []
