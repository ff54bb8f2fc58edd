"""Container records -> ``ro-crate-metadata.json``: a ``ContainerImage`` per image, a ``File`` per SIF.

What a reader of the crate needs to fetch exactly the same bytes again is
the registry, the name, the tag *and* the manifest digest (``sha256``), so
every image entity carries all four; the fingerprint goes in
``softwareVersion`` as the reference writes it, the tag as the workflow
spelled it in ``alternateName``, and the engine the workflow ran with is a
``SoftwareApplication`` the image points to with ``softwareRequirements``.
A staged SIF is a file of its own, with its own checksum, so it gets a
``File`` entity hashed from the staged bytes (and checked against the
record's ``image_signature``: a crate must not describe a file other than
the one the record vouches for).

The output is a pure function of the records and the staged files: keys
sorted, entities in the records' order (so a crate reads back as the list
it was written from), ids derived from digests (``#image-<hex>``,
``#sif-<hex>``, ``#materialize-<hex>``), no clock read unless asked for, so
two writes of the same records are byte-identical and a crate can be
compared with ``diff``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import progress
from ..container_types import ContainerType
from ..digests import CHUNK, is_digest, normalize_fingerprint
from ..errors import ContainerFactoryException, IntegrityError, InvalidReferenceError, ProvenanceError
from ..fsutil import atomic_write_bytes
from ..model import Container
from ..references import parse_reference
from .terms import (
    COMPLETED,
    DOCKER_IMAGE,
    ENGINE_CATEGORY,
    ENGINES,
    METADATA_FILE,
    PROFILES,
    ROCRATE_CONTEXT,
    ROCRATE_SPEC,
    SIF_IMAGE,
    WORKFLOW_RUN_CONTEXT,
)

__all__ = ["crate_metadata", "write_crate"]

logger = logging.getLogger(__name__)

TOOL_ID = "#wfexs-like"
_HEX_ID = 16  # hex digits of a digest kept in an entity id: unique within any crate, still readable

_IMAGE_KIND: dict[ContainerType, str] = {
    ContainerType.Docker: DOCKER_IMAGE,
    ContainerType.Podman: DOCKER_IMAGE,
    ContainerType.UDocker: DOCKER_IMAGE,
    ContainerType.Singularity: SIF_IMAGE,
}


def write_crate(
    containers: Sequence[Container],
    dest_dir: Path,
    *,
    containers_dir: Path | None = None,
    name: str | None = None,
    date_published: dt.datetime | str | None = None,
) -> Path:
    """Write ``dest_dir/ro-crate-metadata.json`` describing ``containers``; return its path.

    ``containers_dir`` is the staged containers dir that relative
    ``localPath`` values are relative to (records are portable); staged SIFs
    are hashed from there. ``date_published`` defaults to
    ``SOURCE_DATE_EPOCH`` when that is set and is left out otherwise, so that
    the same records always give the same bytes. ``dest_dir`` is created if
    needed; the file is replaced atomically.
    """
    dest = Path(dest_dir)
    document = crate_metadata(
        containers, dest, containers_dir=containers_dir, name=name, date_published=date_published
    )
    data = (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    target = dest / METADATA_FILE
    try:
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    except OSError as e:
        raise ProvenanceError(f"could not write the RO-Crate metadata {target}: {e.strerror or e}") from e
    return target


def crate_metadata(
    containers: Sequence[Container],
    dest_dir: Path,
    *,
    containers_dir: Path | None = None,
    name: str | None = None,
    date_published: dt.datetime | str | None = None,
) -> dict[str, Any]:
    """The JSON-LD document ``write_crate`` writes (``dest_dir`` decides which SIFs are inside the crate)."""
    dest = Path(os.path.abspath(dest_dir))
    base = None if containers_dir is None else Path(os.path.abspath(containers_dir))
    entities: dict[str, dict[str, Any]] = {}
    actions: list[str] = []
    parts: list[str] = []
    images: set[str] = set()
    for c in containers:
        image = _image_entity(c)
        if image is None:
            continue
        image_id = _add(entities, "#image-", _image_key(image), image)
        images.add(image_id)
        engine = ENGINES.get(c.type)
        if engine is not None:
            entities.setdefault(
                engine.iri,
                {
                    "@id": engine.iri,
                    "@type": "SoftwareApplication",
                    "applicationCategory": ENGINE_CATEGORY,
                    "name": engine.name,
                },
            )
        sif_id = None
        sif = _sif_file(c, image_id, dest, base)
        if sif is not None:
            inside = sif.pop("@id", None)
            if inside is None:
                sif_id = _add(entities, "#sif-", sif["sha256"], sif)
            else:
                sif_id = inside
                if inside not in entities:
                    entities[inside] = {"@id": inside, **sif}
                    parts.append(inside)
        action_id = "#materialize-" + _short_hash(f"{image_id}\0{sif_id or ''}")
        if action_id not in entities:
            entities[action_id] = _action(action_id, c, image_id, sif_id)
            actions.append(action_id)

    root: dict[str, Any] = {
        "@id": "./",
        "@type": "Dataset",
        "conformsTo": [{"@id": iri} for iri, _, _ in PROFILES],
        "description": f"{len(images)} container image(s) pinned by digest, as wfexs-like "
        "materialized them for a workflow: enough to fetch exactly the same images again.",
        "mentions": [{"@id": a} for a in actions],
        "name": name or "Container images",
    }
    if parts:
        root["hasPart"] = [{"@id": p} for p in parts]
    published = _date_published(date_published)
    if published is not None:
        root["datePublished"] = published
    fixed = [
        {
            "@id": METADATA_FILE,
            "@type": "CreativeWork",
            "about": {"@id": "./"},
            "conformsTo": {"@id": ROCRATE_SPEC},
        },
        root,
    ]
    for iri, label, version in PROFILES:
        entities[iri] = {"@id": iri, "@type": "CreativeWork", "name": label, "version": version}
    entities[TOOL_ID] = {"@id": TOOL_ID, "@type": "SoftwareApplication", "name": "wfexs-like"}
    version = _tool_version()
    if version is not None:
        entities[TOOL_ID]["softwareVersion"] = version
    return {
        "@context": [ROCRATE_CONTEXT, WORKFLOW_RUN_CONTEXT],
        "@graph": fixed + list(entities.values()),
    }


# --------------------------------------------------------------------------
# Entities


def _image_entity(c: Container) -> dict[str, Any] | None:
    """The ``ContainerImage`` of one record, without its ``@id``; None for records that name no image."""
    source = c.source_type or c.type
    kind = _IMAGE_KIND.get(source) or _IMAGE_KIND.get(c.type)
    if kind is None:
        logger.warning(
            "%s: a %s record names no container image; it is left out of the crate",
            c.origTaggedName,
            c.type.value,
        )
        return None
    where = f"cannot describe {c.origTaggedName!r} in an RO-Crate"
    try:
        ref = parse_reference(
            c.taggedName or c.origTaggedName, container_type=c.type, registries=c.registries
        )
    except InvalidReferenceError as e:
        raise ProvenanceError(f"{where}: {e}") from None
    entity: dict[str, Any] = {
        "@type": ["ContainerImage", "SoftwareApplication"],
        "additionalType": {"@id": kind},
        "alternateName": c.origTaggedName,
    }
    if ref.scheme == "docker":
        # The registry's own terms: host, repository inside it, tag.
        entity["registry"] = ref.registry
        entity["name"] = ref.repository
    else:
        # Other registries (oras, library, shub), URLs, files, transports: the
        # canonical reference is the only name that locates the image.
        if ref.is_registry:
            entity["registry"] = ref.registry
        entity["name"] = ref.canonical()
    if ref.tag is not None and ref.scheme == "docker":
        entity["tag"] = ref.tag
    pin = _pin_hex(c.fingerprint, ref.digest, where)
    if pin is not None:
        entity["sha256"] = pin
    for key, value in (
        ("softwareVersion", c.fingerprint),
        ("operatingSystem", c.operatingSystem),
        ("processorRequirements", c.architecture),
    ):
        if value:
            entity[key] = value
    engine = ENGINES.get(c.type)
    if engine is not None:
        entity["softwareRequirements"] = {"@id": engine.iri}
        entity["applicationCategory"] = engine.image_category
    return entity


def _pin_hex(fingerprint: str | None, digest: str | None, where: str) -> str | None:
    """The sha256 hex the image is pinned to: the fingerprint's manifest digest, the tag's, or a file's."""
    candidate = None
    if fingerprint and "@" in fingerprint:
        candidate = fingerprint.rsplit("@", 1)[1]
    elif digest:
        candidate = digest
    elif fingerprint and fingerprint.startswith("sha256"):
        try:
            candidate = normalize_fingerprint(fingerprint)
        except ContainerFactoryException:
            candidate = fingerprint
    if candidate is None:
        return None
    if not candidate.startswith("sha256:"):
        logger.warning(
            "%s: pinned by %s, which the Workflow Run Crate cannot carry as sha256", where, candidate
        )
        return None
    if not is_digest(candidate):
        raise ProvenanceError(
            f"{where}: malformed digest {candidate!r} in its fingerprint; re-materialize it"
        )
    return candidate.split(":", 1)[1]


def _sif_file(c: Container, image_id: str, dest: Path, base: Path | None) -> dict[str, Any] | None:
    """The ``File`` entity of a record's staged SIF, hashed from disk; an ``@id`` only if inside the crate."""
    if c.type != ContainerType.Singularity or c.localPath is None:
        return None
    path = Path(c.localPath)
    if not path.is_absolute():
        if base is None:
            raise ProvenanceError(
                f"{c.origTaggedName}: the record's SIF path {path} is relative to its containers dir; "
                "say where that is (--stage-dir, or containers_dir=)"
            )
        path = base / path
    if not path.is_file():
        raise ProvenanceError(
            f"{c.origTaggedName}: its staged SIF {path} is missing; re-stage it with "
            "'wfexs-like materialize' or point --stage-dir at the containers dir it was staged in"
        )
    hexdigest, size = _hash_file(path, c.origTaggedName)
    if c.image_signature:
        try:
            recorded = normalize_fingerprint(c.image_signature)
        except ContainerFactoryException:
            recorded = None
        if recorded is not None and recorded != "sha256:" + hexdigest:
            raise IntegrityError(
                f"{c.origTaggedName}: the staged SIF {path} has sha256:{hexdigest} but its record says "
                f"{recorded}; re-stage it with 'wfexs-like materialize --force' before describing it",
                expected=recorded,
                actual="sha256:" + hexdigest,
            )
    entity: dict[str, Any] = {
        "@type": "File",
        "about": {"@id": image_id},
        "additionalType": {"@id": SIF_IMAGE},
        "contentSize": str(size),
        "name": _staged_name(path, base),
        "sha256": hexdigest,
    }
    inside = _crate_relative(path, dest)
    if inside is not None:
        entity["@id"] = inside
    return entity


def _action(action_id: str, c: Container, image_id: str, sif_id: str | None) -> dict[str, Any]:
    action: dict[str, Any] = {
        "@id": action_id,
        "@type": "CreateAction",
        "actionStatus": {"@id": COMPLETED},
        "containerImage": {"@id": image_id},
        "instrument": {"@id": TOOL_ID},
        "name": f"Materialize {c.origTaggedName}",
        "object": {"@id": image_id},
    }
    if sif_id is not None:
        action["result"] = {"@id": sif_id}
    return action


# --------------------------------------------------------------------------
# Ids, paths, dates


def _add(entities: dict[str, dict[str, Any]], prefix: str, key: str, body: Mapping[str, Any]) -> str:
    """Add ``body`` under ``prefix + key[:16]``, or find it there; a different body sharing the
    digest (one image under two tags) gets a suffix hashed from its content."""
    entity_id = prefix + key[:_HEX_ID]
    existing = entities.get(entity_id)
    if existing is not None and _without_id(existing) != dict(body):
        entity_id += "-" + _short_hash(json.dumps(body, sort_keys=True), 8)
        existing = entities.get(entity_id)
    if existing is None:
        entities[entity_id] = {"@id": entity_id, **body}
    return entity_id


def _without_id(entity: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if k != "@id"}


def _image_key(image: Mapping[str, Any]) -> str:
    pin = image.get("sha256")
    return pin if isinstance(pin, str) else _short_hash(json.dumps(image, sort_keys=True), 64)


def _short_hash(text: str, n: int = _HEX_ID) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def _staged_name(path: Path, base: Path | None) -> str:
    absolute = Path(os.path.abspath(path))
    if base is not None and absolute.is_relative_to(base):
        return absolute.relative_to(base).as_posix()
    return path.name


def _crate_relative(path: Path, dest: Path) -> str | None:
    """The path as a crate-relative ``@id`` (percent-encoded) when the file lies inside the crate."""
    absolute = Path(os.path.abspath(path))
    if not absolute.is_relative_to(dest):
        return None
    return quote(absolute.relative_to(dest).as_posix())


def _date_published(value: dt.datetime | str | None) -> str | None:
    if value is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        if not epoch:
            return None
        try:
            value = dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC)
        except (ValueError, OverflowError, OSError):
            raise ProvenanceError(
                f"SOURCE_DATE_EPOCH={epoch!r} is not a number of seconds since 1970; fix or unset it"
            ) from None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ProvenanceError(
                f"date {value!r} is not an ISO 8601 date or date-time (e.g. 2024-05-01T12:00:00+00:00)"
            ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def _tool_version() -> str | None:
    # From the installed distribution: the package root re-exports the
    # provenance module, which this layer may not import.
    try:
        return importlib.metadata.version("wfexs-like")
    except importlib.metadata.PackageNotFoundError:
        return None


def _hash_file(path: Path, tag: str) -> tuple[str, int]:
    """sha256 hex and size of ``path``, reported as progress of ``tag`` and stoppable by Ctrl-C."""
    reporter = progress.current()
    reporter.step(tag, f"hashing {path.name}")
    h = hashlib.sha256()
    done = 0
    try:
        total: int | None = path.stat().st_size
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                progress.check_cancelled()
                h.update(chunk)
                done += len(chunk)
                reporter.advance(tag, path.name, done, total)
    except OSError as e:
        raise ProvenanceError(f"{tag}: cannot read its staged SIF {path}: {e.strerror or e}") from e
    return h.hexdigest(), done
