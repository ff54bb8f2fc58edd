rule fastqc:
    input:
        "data/{sample}.fastq",
    output:
        "results/{sample}_fastqc.html",
    container:
        "https://sif.example.org/images/fastqc-0.12.1.sif"
    shell:
        "fastqc {input}"


rule multiqc:
    input:
        expand("results/{sample}_fastqc.html", sample=config["samples"]),
    output:
        "results/report.html",
    container:
        "images/multiqc.sif"
    shell:
        "multiqc results"


rule plot:
    output:
        "results/plot.png",
    container:
        config.get("plot_image", "docker://example/plot:3.1")
    script:
        "../scripts/plot.py"
