{
  "cwlVersion": "v1.2",
  "$graph": [
    {
      "class": "CommandLineTool",
      "id": "#align.cwl",
      "baseCommand": ["bwa", "mem"],
      "hints": [{"class": "DockerRequirement", "dockerPull": "quay.io/biocontainers/bwa:0.7.17--h5bf99c6_8"}],
      "inputs": [],
      "outputs": []
    },
    {
      "class": "CommandLineTool",
      "id": "#sort.cwl",
      "baseCommand": ["samtools", "sort"],
      "hints": [{"class": "DockerRequirement", "dockerPull": "samtools:0.1.19"}],
      "inputs": [],
      "outputs": []
    },
    {
      "class": "CommandLineTool",
      "id": "#count.cwl",
      "baseCommand": ["wc", "-l"],
      "inputs": [],
      "outputs": []
    },
    {
      "class": "Workflow",
      "id": "#main",
      "hints": [{"class": "DockerRequirement", "dockerPull": "debian:12"}],
      "inputs": [],
      "outputs": [],
      "steps": [
        {"id": "#main/align", "run": "#align.cwl", "in": [], "out": []},
        {
          "id": "#main/sort",
          "run": "#sort.cwl",
          "requirements": [
            {"class": "DockerRequirement", "dockerPull": "quay.io/biocontainers/samtools:1.15--h1170115_1"}
          ],
          "in": [],
          "out": []
        },
        {"id": "#main/count", "run": "#count.cwl", "in": [], "out": []}
      ]
    }
  ]
}
