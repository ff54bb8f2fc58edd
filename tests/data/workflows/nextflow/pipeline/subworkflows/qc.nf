include { MULTIQC } from '../modules/nf-core/multiqc/main'
include { CUSTOM_DUMP } from '../modules/local/misc'

workflow QC_REPORT {
    take:
    ch

    main:
    MULTIQC(ch.collect())
    CUSTOM_DUMP(ch)

    emit:
    report = MULTIQC.out
}
