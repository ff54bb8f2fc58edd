def sample_image(wildcards):
    return "docker://example/per-sample:" + wildcards.sample


rule per_sample:
    output:
        "results/{sample}.txt",
    container:
        lambda wildcards: f"docker://example/{wildcards.sample}:1"
    shell:
        "touch {output}"
