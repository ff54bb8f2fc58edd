"""Drive the real WfExS-backend's DockerContainerFactory.

``PY wfexs_driver.py CACHE STAGE online|offline TAG...``

Runs under WfExS-backend's own interpreter (its isolated venv), so it
imports nothing of ours. Prints one JSON line with the call's time.
Written against the factory API of WfExS-backend 1.0.9 (the factory takes
the workflow engine's file-naming function first; the naming here is the
CWL engine's shape, a list of one flattened name), with the keyword names
of earlier 1.0.x releases as the fallback.
"""

import inspect
import json
import sys
import tempfile
import time
from pathlib import Path

del sys.path[0]

from wfexs_backend.container_factories.docker_container import DockerContainerFactory  # noqa: E402

try:
    from wfexs_backend.common import ContainerTaggedName, ContainerType
except ImportError:
    from wfexs_backend.container_factories import ContainerTaggedName, ContainerType

cache, stage, mode, tags = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4:]


def file_names(uri: str) -> list[str]:
    return [uri.replace("/", "_").replace(":", "_")]


if "simpleFileNameMethod" in inspect.signature(DockerContainerFactory.__init__).parameters:  # 1.0.9
    factory = DockerContainerFactory(
        simpleFileNameMethod=file_names,
        containersCacheDir=cache,
        stagedContainersDir=stage,
        engine_name="docker",
        tempDir=Path(tempfile.mkdtemp()),
    )
else:
    factory = DockerContainerFactory(
        cacheDir=cache, stagedContainersDir=stage, engine_name="docker", tempDir=tempfile.mkdtemp()
    )
wanted = [ContainerTaggedName(origTaggedName=t, type=ContainerType.Docker, registries=None) for t in tags]
args: list = [wanted]
if "simpleFileNameMethod" in inspect.signature(factory.materializeContainers).parameters:
    args.append(file_names)
t0 = time.perf_counter()
got = factory.materializeContainers(*args, containers_dir=stage, offline=mode == "offline")
print(json.dumps({"seconds": time.perf_counter() - t0, "containers": len(got)}))
