"""Time ``materializeContainers`` on a warm cache, in one process.

``python api_restage.py CACHE DIR REPS TAG...`` prints one JSON line: the
import and factory set-up times, the first call (cold imports of what
materializing needs, first look at the cache), and every later call, each
staging all TAGs ``--offline`` into a new dir under DIR (a new workflow
run). The per-image figure is a later call divided by the number of tags:
what a long-lived engine pays per re-staged image.
"""

import json
import sys
import time
from pathlib import Path

del sys.path[0]  # run as a script from bench/: its module names must not shadow anything

t0 = time.perf_counter()
from wfexs_like.container_factories import DockerContainerFactory  # noqa: E402
from wfexs_like.model import ContainerTaggedName, ContainerType  # noqa: E402

imported = time.perf_counter() - t0
cache, root, reps, tags = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
t0 = time.perf_counter()
factory = DockerContainerFactory(containersCacheDir=cache, stagedContainersDir=root / "default")
made = time.perf_counter() - t0
wanted = [ContainerTaggedName(t, ContainerType.Docker) for t in tags]
calls = []
for rep in range(reps + 1):
    t0 = time.perf_counter()
    got = factory.materializeContainers(wanted, containers_dir=root / f"run-{rep}", offline=True)
    calls.append(time.perf_counter() - t0)
    if len(got) != len(tags):
        sys.exit(f"materializeContainers returned {len(got)} containers for {len(tags)} tags")
print(json.dumps({"import_s": imported, "factory_s": made, "first_s": calls[0], "calls_s": calls[1:]}))
