process DYNAMIC_TOOL {
    container "example/tool:$params.tool_version"

    input:
    val x

    script:
    "echo ${x}"
}

process UNUSED_TOOL {
    container('example/unused:1.0')

    script:
    "true"
}

process CUSTOM_DUMP {
    label 'tiny'
    container { params.dump_image ?: 'quay.io/example/dump:1.0' }

    input:
    val x

    exec:
    def container = 'not/a-directive:1'
    println container
}
