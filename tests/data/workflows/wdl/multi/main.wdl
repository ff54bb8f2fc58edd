version 1.0

import "tasks/align.wdl" as align

workflow pipeline {
  input {
    File reads
    String samtools_image = "quay.io/biocontainers/samtools:1.17--h00cdaf9_0"
  }
  String sorter = "quay.io/biocontainers/samtools:1.18--h50ea8bc_1"

  call align.bwa_mem { input: reads = reads }

  scatter (i in [1, 2]) {
    call align.samtools_sort as sort { input: bam = bwa_mem.bam, image = sorter }
  }

  if (true) {
    call align.samtools_index { input: image = samtools_image }
  }
}
