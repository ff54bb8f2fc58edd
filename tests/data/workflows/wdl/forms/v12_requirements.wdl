version 1.2

task req {
  input {
    String tag = "1.36"
  }
  command <<< true >>>
  requirements {
    container: "busybox:~{tag}"
  }
}

task req_array {
  command <<< true >>>
  requirements {
    container: ["oras://registry.example.org/sif/tool:1.0", "library://sylabs/examples/lolcow:latest"]
  }
}
