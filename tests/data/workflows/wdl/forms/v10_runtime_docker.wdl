version 1.0

task literal {
  command <<< samtools --version >>>
  runtime {
    docker: "quay.io/biocontainers/samtools:1.15--h1170115_1"
    memory: "2 GB"
  }
}

task from_input_default {
  input {
    String docker_image = "ubuntu:22.04"
    Int threads = 1
  }
  command <<< echo ~{threads} >>>
  runtime {
    docker: docker_image
  }
}

task interpolated {
  input {
    String version = "3.19"
  }
  String image = "alpine:~{version}"
  command <<< true >>>
  runtime {
    docker: image
  }
}

task no_default {
  input {
    String image
  }
  command <<< true >>>
  runtime {
    docker: image
  }
}

task computed {
  input {
    Boolean big = false
  }
  command <<< true >>>
  runtime {
    docker: if big then "debian:12" else "debian:12-slim"
  }
}
