rule copy:
    container: "docker://example/other-copy:1.0"
    shell: "true"
