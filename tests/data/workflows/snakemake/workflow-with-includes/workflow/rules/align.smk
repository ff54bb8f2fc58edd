include: "common.smk"


rule bwa_mem:
    input:
        reads="data/{sample}.fastq",
    output:
        "results/{sample}.bam",
    container: config["images"]["bwa"]
    threads: 8
    shell:
        "bwa mem -t {threads} ref.fa {input.reads} > {output}"


rule index:
    output:
        "ref.fa.bwt",
    singularity:
        "oras://registry.example.org/tools/bwa-index:0.7.18"
    shell:
        "bwa index ref.fa"
