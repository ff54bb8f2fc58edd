"""``deploy`` as a library function: every record of a containers file made runnable by one engine.

The stage dir defaults to the one ``materialize`` noted in the file
(``ops.materialize.recorded_stage_dir``), so ``deploy c.yaml`` works on the
file as written, and on a copy of its directory. Every record is attempted;
the rows say what happened to each, failures included, and the caller
decides how to present them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path
from typing import Literal

from ..container_factories import ContainerFactory, make_factory
from ..errors import ContainerFactoryException, ProvenanceError
from ..model import Container
from ..progress import check_cancelled
from ..provenance import read_containers_file
from .materialize import recorded_stage_dir

__all__ = ["DEPLOY_STATES", "DeployResult", "DeployRow", "DeployState", "deploy", "stage_dir_for"]

logger = logging.getLogger(__name__)

DeployState = Literal["loaded", "present", "converted", "skipped", "failed"]
#: In the order a summary counts them.
DEPLOY_STATES: tuple[DeployState, ...] = ("loaded", "present", "converted", "skipped", "failed")


@dataclasses.dataclass(frozen=True)
class DeployRow:
    """One record's fate: ``tagged_name``/``signature`` are what the engine now runs (a converted
    record's are the SIF's); ``reason`` says why a record was skipped or failed."""

    tag: str
    state: DeployState
    tagged_name: str
    signature: str | None
    reason: str | None = None


@dataclasses.dataclass
class DeployResult:
    rows: list[DeployRow]
    stage_dir: Path

    @property
    def failures(self) -> list[tuple[str, str]]:
        return [(r.tag, r.reason or "failed") for r in self.rows if r.state == "failed"]

    def counts(self) -> dict[DeployState, int]:
        found = Counter(r.state for r in self.rows)
        return {state: found.get(state, 0) for state in DEPLOY_STATES}


def stage_dir_for(containers_file: Path, stage_dir: Path | None = None) -> Path:
    """The stage dir given, else the one noted in ``containers_file``; absolute either way."""
    if stage_dir is not None:
        return Path(stage_dir).absolute()
    recorded = recorded_stage_dir(containers_file)
    if recorded is None:
        raise ProvenanceError(
            f"{containers_file} does not say where its snapshots are staged (it was not written by "
            "'wfexs-like materialize -o'); give the stage dir with --stage-dir DIR"
        )
    return recorded


def _deploy_one(
    factory: ContainerFactory, container: Container, stage_dir: Path, force: bool, engine: str, offline: bool
) -> DeployRow:
    tag = container.origTaggedName
    if not factory.AcceptsContainer(container):
        reason = f"a {container.type.value} record, not for --engine {engine}"
        return DeployRow(tag, "skipped", container.taggedName, container.signature, reason)
    logger.info("%s: deploying into %s", tag, engine)
    try:
        deployed, loaded = factory.deploySingleContainer(
            container, containers_dir=stage_dir, force=force, offline=offline
        )
    except ContainerFactoryException as e:
        return DeployRow(tag, "failed", container.taggedName, container.signature, str(e))
    state: DeployState = "loaded" if loaded else ("converted" if deployed is not container else "present")
    logger.info("%s: %s", tag, state)
    return DeployRow(tag, state, deployed.taggedName, deployed.signature)


def deploy(
    containers_file: Path,
    *,
    engine: str,
    stage_dir: Path | None = None,
    cache_dir: Path | None = None,
    force: bool = False,
    offline: bool = False,
) -> DeployResult:
    """Load (or verify in place, or convert) every record of ``containers_file`` for ``engine``.

    Only what the engine lacks is loaded; a snapshot whose bytes no longer
    match its record fails that record. Records of another engine's kind
    are skipped (a SIF record for Docker), each with its reason. A
    snapshot whose cached bytes rotted is evicted and fetched again once;
    ``offline`` forbids that fetch, and the record fails naming the blob.
    """
    containers_file = Path(containers_file)
    cdir = stage_dir_for(containers_file, stage_dir)
    containers = read_containers_file(containers_file, containers_dir=cdir)
    factory = make_factory(engine, containersCacheDir=cache_dir, stagedContainersDir=cdir)
    rows: list[DeployRow] = []
    for container in containers:
        check_cancelled()
        rows.append(_deploy_one(factory, container, cdir, force, engine, offline))
    return DeployResult(rows, cdir)
