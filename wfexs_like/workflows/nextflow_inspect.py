"""``nextflow inspect``: Nextflow itself names each process's container, when it is installed.

It is the exact answer where the static reading has to say ``dynamic``, at a
price: Nextflow compiles and runs the pipeline's Groovy to answer, so it is
only used when the user asks for it (``--nextflow-inspect``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .. import progress
from ..errors import ContainerEngineException
from .base import ContainerRef, ScanOptions
from .nextflow_config import NextflowConfig, requested_profiles
from .nextflow_names import SINGULARITY_ENGINES, normalize

LANGUAGE = "nextflow"
#: seconds ``nextflow inspect`` may take (it compiles the pipeline, may download plugins)
INSPECT_TIMEOUT = 900


def inspect(main: Path, options: ScanOptions, config: NextflowConfig | None = None) -> list[ContainerRef]:
    """``nextflow inspect -format json``'s containers, as exact references.

    Nextflow evaluates the pipeline's Groovy to answer, which is why this runs only on request. The
    target engine is enabled through a one-line extra config (``-c``), since ``inspect`` resolves
    names for the engine the config enables; params reach it as a JSON ``-params-file``.
    """
    binary = shutil.which("nextflow")
    if binary is None:
        raise ContainerEngineException(
            "`nextflow` is not on PATH, and --nextflow-inspect asks Nextflow itself to resolve the "
            "containers; install Nextflow (or add it to PATH), or scan without --nextflow-inspect"
        )
    progress.current().step(str(main), "nextflow inspect")
    with tempfile.TemporaryDirectory(prefix="wfexs-like-inspect-") as tmp:
        engine_config = Path(tmp, "engine.config")
        engine_config.write_text(f"{options.engine}.enabled = true\n", encoding="utf-8")
        command = [binary, "-q", "-c", str(engine_config), "inspect", "-format", "json"]
        profiles = ",".join(requested_profiles(options))
        if profiles:
            command += ["-profile", profiles]
        if options.params:
            params_file = Path(tmp, "params.json")
            params_file.write_text(json.dumps(options.params, default=str), encoding="utf-8")
            command += ["-params-file", str(params_file)]
        command.append(str(main))
        try:
            proc = subprocess.run(
                command,
                capture_output=True,
                text=True,
                cwd=main.parent,
                timeout=INSPECT_TIMEOUT,
                env={**os.environ, "NXF_ANSI_LOG": "false"},
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise ContainerEngineException(
                f"nextflow inspect did not finish in {INSPECT_TIMEOUT} s", command=command, stderr=e.stderr
            ) from e
    if proc.returncode != 0:
        raise ContainerEngineException(
            "nextflow inspect failed", command=command, returncode=proc.returncode, stderr=proc.stderr
        )
    return parse_inspect(proc.stdout, main, options.engine, config)


def parse_inspect(
    text: str, main: Path, engine: str, config: NextflowConfig | None = None
) -> list[ContainerRef]:
    """References from ``nextflow inspect -format json`` output:
    ``{"processes": [{"name": "...", "container": "..."}, ...]}``; a process without a container
    has ``null``.

    For Docker and Podman the names arrive normalised (registry prefixed). For Singularity and
    Apptainer, inspect's dry run returns every name it would pull *as written*, so ``config``'s
    ``singularity.registry`` / ``apptainer.registry`` is applied here, as the run would."""
    try:
        data = json.loads(text)
        processes = data["processes"]
        rows = [(str(p["name"]), p.get("container")) for p in processes]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ContainerEngineException(
            f"nextflow inspect printed something other than its JSON report ({e}); run it by hand "
            f"on {main} to see why",
            stderr=text,
        ) from e
    by_container: dict[str, list[str]] = {}
    for name, container in rows:
        if isinstance(container, str) and container:
            by_container.setdefault(container, []).append(name)
    registries = config if config is not None and engine in SINGULARITY_ENGINES else NextflowConfig()
    out = []
    for container, names in by_container.items():
        kind, tag, notes = normalize(container, engine, registries, main.parent)
        out.append(
            ContainerRef(
                file=str(main),
                line=0,
                raw=container,
                tag=tag,
                kind=kind,
                confidence="exact",
                language=LANGUAGE,
                note="; ".join([f"process {', '.join(names)}", "from nextflow inspect", *notes]),
            )
        )
    return out


__all__ = ["inspect", "parse_inspect"]
