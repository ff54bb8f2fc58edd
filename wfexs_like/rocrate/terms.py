"""The vocabulary a containers crate is written in, and the spellings readers meet in the wild.

Identifiers only: the RO-Crate 1.1 and Workflow Run Crate 0.5 profile
permalinks, the ``workflow-run`` ro-terms namespace (``ContainerImage``,
``DockerImage``, ``SIFImage``, ``registry``, ``tag``, ``sha256``,
``containerImage``), and the engine entities. The engine IRIs and the
Wikidata ``applicationCategory`` values are the ones WfExS-backend writes and
reads back to pick a container factory, so a crate of ours tells it which
engine ran each image, and one of its crates tells us.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..container_types import ContainerType

METADATA_FILE = "ro-crate-metadata.json"
#: What RO-Crate 1.0 called the metadata file; still read.
LEGACY_METADATA_FILE = "ro-crate-metadata.jsonld"

ROCRATE_SPEC = "https://w3id.org/ro/crate/1.1"
ROCRATE_CONTEXT = ROCRATE_SPEC + "/context"

WORKFLOW_RUN_BASE = "https://w3id.org/ro/terms/workflow-run"
WORKFLOW_RUN_CONTEXT = WORKFLOW_RUN_BASE + "/context"
WORKFLOW_RUN_NS = WORKFLOW_RUN_BASE + "#"
DOCKER_IMAGE = WORKFLOW_RUN_NS + "DockerImage"
SIF_IMAGE = WORKFLOW_RUN_NS + "SIFImage"

PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
WORKFLOW_RUN_CRATE = "https://w3id.org/ro/wfrun/workflow/0.5"
#: (permalink, name, version) of each profile the root dataset conforms to.
PROFILES: tuple[tuple[str, str, str], ...] = (
    (PROCESS_RUN_CRATE, "Process Run Crate", "0.5"),
    (WORKFLOW_RUN_CRATE, "Workflow Run Crate", "0.5"),
)

COMPLETED = "http://schema.org/CompletedActionStatus"

#: Prefixes a term may carry when a crate was not compacted against our contexts.
TERM_PREFIXES: tuple[str, ...] = (
    WORKFLOW_RUN_NS,
    "wrterm:",
    "http://schema.org/",
    "https://schema.org/",
    "schema:",
)

#: Image kinds by the short name of their ``additionalType``.
IMAGE_KINDS: dict[str, ContainerType] = {
    "DockerImage": ContainerType.Docker,
    "SIFImage": ContainerType.Singularity,
}

_WIKIDATA = "https://www.wikidata.org/wiki/"
#: What the engine entities are (OS-level virtualization software).
ENGINE_CATEGORY = _WIKIDATA + "Q7935198"


@dataclass(frozen=True)
class EngineTerms:
    """How one engine is named in a crate: its entity, and the category of the images it runs."""

    iri: str
    name: str
    image_category: str


ENGINES: dict[ContainerType, EngineTerms] = {
    ContainerType.Docker: EngineTerms("https://www.docker.com/", "docker", _WIKIDATA + "Q15206305"),
    ContainerType.Podman: EngineTerms("https://podman.io/", "podman", _WIKIDATA + "Q70876440"),
    ContainerType.Singularity: EngineTerms("https://apptainer.org/", "singularity", _WIKIDATA + "Q51294208"),
}

#: Engine entity ids and names as crates spell them -> the container type they run.
ENGINE_BY_KEY: dict[str, ContainerType] = {
    **{t.iri.rstrip("/").split("://", 1)[1]: ct for ct, t in ENGINES.items()},
    **{t.name: ct for ct, t in ENGINES.items()},
    "apptainer": ContainerType.Singularity,
    "sylabs.io/singularity": ContainerType.Singularity,
    "sylabs.io": ContainerType.Singularity,
}
IMAGE_CATEGORY: dict[str, ContainerType] = {t.image_category: ct for ct, t in ENGINES.items()}
