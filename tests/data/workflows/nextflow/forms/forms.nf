// Every syntax form of the container directive, one process each (a module file: no workflow).
params.tool    = 'samtools'
params.version = '1.17'
params.image   = 'example/direct:1.0'

process SINGLE_QUOTED {
    container 'example/single:1.0'
    script: 'true'
}

process DOUBLE_QUOTED {
    container "example/double:1.0"
    script: 'true'
}

process TRIPLE_QUOTED {
    container '''example/triple:1.0'''
    script: 'true'
}

process PARENS {
    container('example/parens:1.0')
    script: 'true'
}

process GSTRING_DOLLAR {
    container "example/$params.tool:$params.version"
    script: 'true'
}

process GSTRING_BRACES {
    container "example/${params.tool}:${params.version}-r1"
    script: 'true'
}

process PARAM_REF {
    container params.image
    script: 'true'
}

process CONCAT {
    container 'example/' + params.tool +
        ':' + params.version
    script: 'true'
}

process CLOSURE {
    container { "example/closure:${params.version}" }
    script: 'true'
}

process CLOSURE_RETURN {
    container {
        def v = params.version
        return "example/closure-return:$v"
    }
    script: 'true'
}

process METHOD_CALL {
    container "example/${params.tool.toUpperCase()}:1".toLowerCase()
    script: 'true'
}

process ELVIS_UNSET {
    container params.not_set ?: 'example/fallback:1.0'
    script: 'true'
}

process TERNARY_UNKNOWN {
    container params.flavour == 'slim' ? 'example/slim:1.0' : 'example/full:1.0'
    script: 'true'
}

process ENGINE_IF {
    if (workflow.containerEngine == 'podman') {
        container 'example/podman-only:1'
    } else {
        container 'example/other-engines:1'
    }
    script: 'true'
}

process UNKNOWN_IF {
    if (params.flavour) {
        container 'example/if-a:1'
    } else {
        container 'example/if-b:1'
    }
    script: 'true'
}

process DOCKER_SCHEME {
    container 'docker://example/scheme:1.0'
    script: 'true'
}

process ORAS {
    container 'oras://registry.example.org/tools/sif:1.0'
    script: 'true'
}

process SIF_URL {
    container 'https://sif.example.org/images/tool-1.0.sif'
    script: 'true'
}

process LOCAL_SIF {
    container '/images/tool.sif'
    script: 'true'
}

process RELATIVE_SIF {
    container 'images/relative.sif'
    script: 'true'
}

process TASK_DEPENDENT {
    container "example/attempt:${task.attempt}"
    script: 'true'
}

process ENV_DEPENDENT {
    container "${System.getenv('IMAGE_HOST')}/example/env:1.0"
    script: 'true'
}

process NO_CONTAINER {
    script:
    """
    sed 's/container/x/' input | awk '{ print \$1 / 2 }' // container 'not/me:1'
    """
}

process NULL_CONTAINER {
    container null
    shell:
    '''
    echo !{params.tool} container 'nor/me:1'
    '''
}
