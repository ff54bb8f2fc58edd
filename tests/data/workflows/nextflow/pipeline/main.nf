#!/usr/bin/env nextflow
/*
 * A pipeline written for the scanner's tests: every way a process gets its container.
 * container 'commented/out:1' must not be reported.
 */
nextflow.enable.dsl = 2

params.greeting = 'hello'
params.aligner_version = '0.7.17' // the config's value wins

include { FASTQC } from './modules/nf-core/fastqc/main'
include { FASTQC as FASTQC_TRIMMED } from './modules/nf-core/fastqc/main'
include { ALIGN } from './modules/local/align'
include { DYNAMIC_TOOL; UNUSED_TOOL } from './modules/local/misc.nf'
include { QC_REPORT } from './subworkflows/qc'

process SAY_HELLO {
    label 'tiny'
    container 'ubuntu:24.04'

    input:
    val x

    output:
    stdout

    script:
    """
    echo ${x} "container 'not/this:one'"
    """
}

process BIG_JOB {
    label 'big_mem'

    script:
    """
    echo big
    """
}

process PLAIN {
    script:
    'echo plain'
}

workflow {
    ch = Channel.of(params.greeting)
    SAY_HELLO(ch)
    FASTQC(ch)
    FASTQC_TRIMMED(ch)
    ALIGN(ch)
    ch | DYNAMIC_TOOL
    QC_REPORT(ch)
    BIG_JOB()
    PLAIN()
}
