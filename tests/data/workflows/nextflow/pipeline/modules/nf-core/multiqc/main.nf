// The older nf-core form: an if/else around two directives.
process MULTIQC {
    label 'process_single'

    if (workflow.containerEngine == 'singularity' && !task.ext.singularity_pull_docker_container) {
        container "https://sif.example.org/singularity/multiqc:1.19--pyhdfd78af_0"
    } else {
        container "quay.io/biocontainers/multiqc:1.19--pyhdfd78af_0"
    }

    input:
    path files

    script:
    """
    multiqc .
    """
}
