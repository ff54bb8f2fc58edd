process ALIGN {
    label 'process_high'
    container "${params.registry_ns}/bwa:${params.aligner_version}"

    input:
    val x

    script:
    """
    bwa mem ref.fa ${x}
    """
}
