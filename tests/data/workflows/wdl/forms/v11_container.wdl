version 1.1

task single {
  command <<< true >>>
  runtime {
    container: "python:3.12-slim"
  }
}

task alternatives {
  command <<< true >>>
  runtime {
    container: ["ghcr.io/example/tool:2.0", "docker://ubuntu:24.04"]
  }
}

task anything {
  command <<< true >>>
  runtime {
    container: "*"
  }
}
