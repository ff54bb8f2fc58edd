#!/usr/bin/env cwl-runner
cwlVersion: v1.2
class: Workflow
doc: A workflow with steps in separate files; each step's expected image is in expected.yaml.
requirements:
  - class: SubworkflowFeatureRequirement
  - class: InlineJavascriptRequirement
hints:
  DockerRequirement:
    dockerPull: debian:12
inputs:
  reads: File
outputs: []
steps:
  - id: align
    run: tools/align.cwl
    in: {reads: reads}
    out: [bam]
  - id: sort
    requirements:
      - class: DockerRequirement
        dockerPull: quay.io/biocontainers/samtools:1.15--h1170115_1
    run: tools/sort.cwl
    in: {bam: align/bam}
    out: [sorted]
  - id: count
    run: tools/count.cwl
    in: {bam: sort/sorted}
    out: []
  - id: nested
    run: sub/subworkflow.cwl
    in: {}
    out: []
  - id: check
    run:
      class: ExpressionTool
      requirements: {InlineJavascriptRequirement: {}}
      inputs: []
      outputs: []
      expression: "${ return {}; }"
    in: {}
    out: []
