"""Drive the real WfExS-backend's DockerContainerFactory.

``PY wfexs_driver.py CACHE STAGE online|offline TAG...``

Runs under WfExS-backend's own interpreter (its isolated venv), so it
imports nothing of ours. Prints one JSON line with the call's time. Written
against the factory API of WfExS-backend 1.0.x (``materializeContainers``
takes a file-naming function in some releases and not in others, hence the
signature check); it has not run on this project's machines, where the
package index offers no wfexs-backend (see README.md).
"""

import inspect
import json
import sys
import tempfile
import time

del sys.path[0]

from wfexs_backend.container_factories.docker_container import DockerContainerFactory  # noqa: E402

try:
    from wfexs_backend.common import ContainerTaggedName, ContainerType
except ImportError:
    from wfexs_backend.container_factories import ContainerTaggedName, ContainerType

cache, stage, mode, tags = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
factory = DockerContainerFactory(
    cacheDir=cache, stagedContainersDir=stage, engine_name="docker", tempDir=tempfile.mkdtemp()
)
wanted = [ContainerTaggedName(origTaggedName=t, type=ContainerType.Docker, registries=None) for t in tags]
args: list = [wanted]
if "simpleFileNameMethod" in inspect.signature(factory.materializeContainers).parameters:
    args.append(lambda uri: uri.replace("/", "_").replace(":", "_"))
t0 = time.perf_counter()
got = factory.materializeContainers(*args, containers_dir=stage, offline=mode == "offline")
print(json.dumps({"seconds": time.perf_counter() - t0, "containers": len(got)}))
