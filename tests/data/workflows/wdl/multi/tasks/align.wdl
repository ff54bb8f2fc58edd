version 1.0

task bwa_mem {
  input {
    File reads
    String image = "quay.io/biocontainers/bwa:0.7.17--h5bf99c6_8"
  }
  command <<< bwa mem ~{reads} >>>
  output {
    File bam = stdout()
  }
  runtime {
    docker: image
  }
}

task samtools_sort {
  input {
    File bam
    String image = "quay.io/biocontainers/samtools:1.15--h1170115_1"
  }
  command <<< samtools sort ~{bam} >>>
  runtime {
    docker: image
  }
}

task samtools_index {
  input {
    String image
  }
  command <<< true >>>
  runtime {
    docker: image
  }
}
