"""An RO-Crate's ``ContainerImage`` entities -> Container records that pin exactly the recorded digests.

Each image becomes a record whose ``fingerprint`` is
``registry/name@sha256:<hex>``: that is what the factories pin a
Container to (``pin_from_fingerprint``), so materializing the records
fetches the recorded manifest and nothing newer, whatever the tag points at
today. A staged snapshot shipped inside the crate (a SIF, or WfExS-backend's
``docker save`` image) is handed over as ``localPath`` with its recorded
``sha256`` as ``image_signature``; a factory adopts it only after checking
those bytes.

Crates are read as they are written in the wild, not only as we write them:

* ours and WfExS-backend's current ones: ``additionalType`` as
  ``{"@id": ".../workflow-run#DockerImage"}``, the engine as the
  ``softwareRequirements`` entity, a materialized SIF as a ``File`` (WfExS:
  also typed ``ContainerImage``) that a ``CreateAction`` has as ``result``
  of the image, or that is ``about`` it;
* WfExS-backend's 2023 ones: ``additionalType`` as the bare string
  ``"DockerImage"``, no ``sha256`` but the digest in ``softwareVersion``
  (``library/node@sha256:...``, without the registry), and ``name`` that may
  hold the registry too (``docker.io/node``);
* terms not compacted (``https://w3id.org/ro/terms/workflow-run#sha256``);
* a ``containerImage`` that is a plain URL (``https://example.org/tool.sif``).

The metadata file is JSON that someone else wrote: it is refused past
16 MB or 200 levels of nesting before anything is built from it, and a path
in it may not leave the crate.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ..container_types import ContainerType
from ..digests import is_digest
from ..errors import InvalidReferenceError, ProvenanceError, UnsafeInputError
from ..model import META_JSON_POSTFIX, Container
from ..references import parse_reference
from .terms import (
    ENGINE_BY_KEY,
    IMAGE_CATEGORY,
    IMAGE_KINDS,
    LEGACY_METADATA_FILE,
    METADATA_FILE,
    TERM_PREFIXES,
)

__all__ = ["MAX_CRATE_BYTES", "MAX_DEPTH", "crate_metadata_path", "read_crate"]

logger = logging.getLogger(__name__)

MAX_CRATE_BYTES = 16 << 20
MAX_DEPTH = 200

_MAX_SIDECAR_BYTES = 1 << 20
_SNAPSHOT_TYPES = frozenset({"File", "MediaObject"})
_SIF_SCHEMES = ("http://", "https://", "library://", "shub://", "oras://")


def crate_metadata_path(crate: Path) -> Path:
    """The metadata file of a crate given as its directory or as the file itself."""
    crate = Path(crate)
    if crate.is_dir():
        for name in (METADATA_FILE, LEGACY_METADATA_FILE):
            if (crate / name).is_file():
                return crate / name
        raise ProvenanceError(
            f"{crate} is not an RO-Crate: it has no {METADATA_FILE}; give the directory "
            "'wfexs-like provenance rocrate' wrote"
        )
    return crate


def read_crate(crate_dir: Path) -> list[Container]:
    """The container records of an RO-Crate (a directory, or its metadata file), in graph order.

    Every record is pinned to the digest the crate recorded; an image the
    crate records no digest for is returned unpinned, with a warning, as it
    can only be fetched by its tag.
    """
    path = crate_metadata_path(crate_dir)
    where = str(path)
    graph = _graph(load_bounded_json(path), where)
    return _Crate(graph, path.parent, where).containers()


# --------------------------------------------------------------------------
# Bounded JSON


def load_bounded_json(path: Path, *, max_bytes: int = MAX_CRATE_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a JSON file that someone else wrote, refusing oversized or absurdly nested ones."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ProvenanceError(f"cannot read RO-Crate metadata {path}: {e.strerror or e}") from e
    if size > max_bytes:
        raise UnsafeInputError(
            f"RO-Crate metadata {path} is {size} bytes, more than the {max_bytes} this tool reads; "
            "it does not describe a workflow's containers, or it must be split"
        )
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as e:
        raise ProvenanceError(f"cannot read RO-Crate metadata {path}: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise UnsafeInputError(f"RO-Crate metadata {path} grew past {max_bytes} bytes while it was read")
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise ProvenanceError(
            f"{path} is not an RO-Crate metadata file: not UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    except json.JSONDecodeError as e:
        raise ProvenanceError(
            f"{path} is not an RO-Crate metadata file: not JSON ({e.msg} at line {e.lineno}, "
            f"column {e.colno}); RO-Crate metadata is JSON-LD"
        ) from None
    except RecursionError:
        raise UnsafeInputError(f"{path}: JSON nested too deeply to be RO-Crate metadata; refused") from None
    _check_depth(document, max_depth, str(path))
    return document


def _check_depth(document: Any, max_depth: int, where: str) -> None:
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            raise UnsafeInputError(
                f"{where}: JSON nested more than {max_depth} levels deep; not RO-Crate metadata, refused"
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _graph(document: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(document, dict) or not isinstance(document.get("@graph"), list):
        raise ProvenanceError(
            f"{where} is not RO-Crate metadata: expected a JSON object with an '@graph' list of entities"
        )
    graph = document["@graph"]
    for index, entity in enumerate(graph):
        if not isinstance(entity, dict) or not isinstance(entity.get("@id"), str):
            raise ProvenanceError(f"{where}: @graph[{index}] is not an entity (a JSON object with an '@id')")
    return graph


# --------------------------------------------------------------------------
# JSON-LD, as far as reading container images needs it


def _short(term: str) -> str:
    for prefix in TERM_PREFIXES:
        if term.startswith(prefix):
            return term[len(prefix) :]
    return term


def _values(entity: Mapping[str, Any], name: str) -> list[Any]:
    """Every value of property ``name`` (compacted or spelled as a full IRI), ``@value`` unwrapped."""
    out: list[Any] = []
    for key, value in entity.items():
        if key.startswith("@") or _short(key) != name:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and "@value" in item:
                item = item["@value"]
            if item is not None:
                out.append(item)
    return out


def _ids(entity: Mapping[str, Any], name: str) -> list[str]:
    return [v["@id"] for v in _values(entity, name) if isinstance(v, dict) and isinstance(v.get("@id"), str)]


def _types(entity: Mapping[str, Any]) -> set[str]:
    raw = entity.get("@type")
    return {_short(t) for t in (raw if isinstance(raw, list) else [raw]) if isinstance(t, str)}


class _Crate:
    def __init__(self, graph: list[dict[str, Any]], root: Path, where: str) -> None:
        self.root = root
        self.where = where
        self.entities: dict[str, dict[str, Any]] = {}
        for entity in graph:
            seen = self.entities.setdefault(entity["@id"], entity)
            if seen is not entity and seen != entity:
                raise ProvenanceError(
                    f"{where}: two different entities share the id {entity['@id']!r}; "
                    "a crate must describe each thing once"
                )
        self.order = list(self.entities)

    # -- finding images -------------------------------------------------------------------------
    def _is_image(self, entity: Mapping[str, Any]) -> bool:
        return "ContainerImage" in _types(entity)

    def _is_file(self, entity: Mapping[str, Any]) -> bool:
        return bool(_types(entity) & _SNAPSHOT_TYPES)

    def _is_snapshot(self, entity: Mapping[str, Any]) -> bool:
        """A file holding an image (a SIF, a saved image): not its ``_meta.json``, also a File about it."""
        if not self._is_file(entity):
            return False
        if self._is_image(entity):
            return True
        for value in _values(entity, "additionalType"):
            term = value.get("@id") if isinstance(value, dict) else value
            if isinstance(term, str) and _short(term) in IMAGE_KINDS:
                return True
        return False

    def containers(self) -> list[Container]:
        found: list[Container] = []
        seen_refs: set[str] = set()
        for entity_id in self.order:
            entity = self.entities[entity_id]
            if self._is_image(entity) and not self._is_file(entity):
                container = self._container(entity)
                found.append(container)
                seen_refs.add(entity_id)
        for url in self._url_images():
            if url not in seen_refs:
                seen_refs.add(url)
                found.append(self._url_container(url))
        if not found:
            raise ProvenanceError(
                f"{self.where}: the crate describes no ContainerImage; there is nothing to materialize"
            )
        return found

    def _url_images(self) -> Iterator[str]:
        """``containerImage`` values that are a URL, or point at no entity: images named only by address."""
        for entity_id in self.order:
            for value in _values(self.entities[entity_id], "containerImage"):
                target = value.get("@id") if isinstance(value, dict) else value
                if not isinstance(target, str) or target in self.entities:
                    continue
                if target.startswith("#"):
                    logger.warning("%s: containerImage %r names no entity; ignored", self.where, target)
                    continue
                yield target

    # -- one image ------------------------------------------------------------------------------
    def _text(self, entity: Mapping[str, Any], name: str, where: str) -> str | None:
        values = {v for v in _values(entity, name) if isinstance(v, str | int | float) and str(v) != ""}
        if len(values) > 1:
            raise ProvenanceError(
                f"{where}: {name} has several values {sorted(map(str, values))}; expected one"
            )
        return str(values.pop()) if values else None

    def _container(self, entity: Mapping[str, Any]) -> Container:
        entity_id = entity["@id"]
        where = f"{self.where}: ContainerImage {entity_id!r}"
        kind = self._image_kind(entity, where)
        ctype = self._engine_type(entity) or kind
        name = self._text(entity, "name", where)
        if name is None:
            raise ProvenanceError(f"{where}: has no name; a ContainerImage must name its image")
        registry = self._text(entity, "registry", where)
        tag = self._text(entity, "tag", where)
        pin = self._pin(entity, where)

        if kind == ContainerType.Docker and _is_docker_name(name, registry, where):
            reference = _docker_reference(name, registry, tag, pin, where)
            ref = parse_reference(reference, container_type=ContainerType.Docker)
            tagged = ref.canonical() if ctype != ContainerType.Singularity else "docker://" + ref.canonical()
            fingerprint = (
                f"{ref.registry}/{ref.repository}@sha256:{pin}"
                if pin
                else self._text(entity, "softwareVersion", where)
            )
        else:
            try:
                ref = parse_reference(name, container_type=ctype)
            except InvalidReferenceError as e:
                raise ProvenanceError(f"{where}: name {name!r} is not an image reference: {e}") from None
            tagged = ref.canonical()
            fingerprint = self._text(entity, "softwareVersion", where)
            if fingerprint is None and pin is not None:
                fingerprint = "sha256:" + pin
        if pin is None and not (fingerprint and "@sha256:" in fingerprint):
            logger.warning(
                "%s records no digest for %s; it can only be fetched by its tag, which may have moved",
                self.where,
                tagged,
            )
        container = Container(
            origTaggedName=self._original_tag(entity, tagged, ctype, where),
            type=ctype,
            taggedName=tagged,
            architecture=self._text(entity, "processorRequirements", where),
            operatingSystem=self._text(entity, "operatingSystem", where),
            fingerprint=fingerprint,
            source_type=kind,
        )
        self._attach_snapshot(container, entity_id, where)
        return container

    def _image_kind(self, entity: Mapping[str, Any], where: str) -> ContainerType:
        for value in _values(entity, "additionalType"):
            term = value.get("@id") if isinstance(value, dict) else value
            if isinstance(term, str) and _short(term) in IMAGE_KINDS:
                return IMAGE_KINDS[_short(term)]
        raise ProvenanceError(
            f"{where}: additionalType is neither DockerImage nor SIFImage "
            f"({_values(entity, 'additionalType')!r}); this tool materializes only those"
        )

    def _engine_type(self, entity: Mapping[str, Any]) -> ContainerType | None:
        """The engine the workflow ran the image with: the engine entity, else the image's category."""
        for engine_id in _ids(entity, "softwareRequirements"):
            keys = [engine_id.rstrip("/").split("://", 1)[-1].lower()]
            engine = self.entities.get(engine_id)
            if engine is not None:
                keys += [str(v).lower() for v in _values(engine, "name")]
            for key in keys:
                if key in ENGINE_BY_KEY:
                    return ENGINE_BY_KEY[key]
        for category in _values(entity, "applicationCategory"):
            term = category.get("@id") if isinstance(category, dict) else category
            if isinstance(term, str) and term in IMAGE_CATEGORY:
                return IMAGE_CATEGORY[term]
        return None

    def _pin(self, entity: Mapping[str, Any], where: str) -> str | None:
        """The manifest digest (hex): ``sha256``, else the one in ``softwareVersion``; both must agree."""
        pins: set[str] = set()
        recorded = self._text(entity, "sha256", where)
        if recorded is not None:
            pins.add(recorded.lower().removeprefix("sha256:"))
        version = self._text(entity, "softwareVersion", where)
        if version and "@sha256:" in version:
            pins.add(version.rsplit("@sha256:", 1)[1].lower())
        if len(pins) > 1:
            raise ProvenanceError(
                f"{where}: sha256 and softwareVersion name different digests ({', '.join(sorted(pins))}); "
                "the crate contradicts itself, so it cannot say which image ran"
            )
        pin = pins.pop() if pins else None
        if pin is not None and not is_digest("sha256:" + pin):
            raise ProvenanceError(f"{where}: sha256 {pin!r} is not 64 hex digits")
        return pin

    def _original_tag(self, entity: Mapping[str, Any], tagged: str, ctype: ContainerType, where: str) -> str:
        """The tag as the workflow wrote it (``alternateName``) if it is the same image, else ``tagged``."""
        original = self._text(entity, "alternateName", where)
        if original is None:
            return tagged
        try:
            same = (
                parse_reference(original, container_type=ctype).canonical()
                == parse_reference(tagged, container_type=ctype).canonical()
            )
        except InvalidReferenceError:
            same = False
        return original if same else tagged

    # -- snapshots shipped in the crate ----------------------------------------------------------
    def _snapshots_of(self, image_id: str) -> Iterator[Mapping[str, Any]]:
        for entity_id in self.order:
            entity = self.entities[entity_id]
            if "CreateAction" in _types(entity) and image_id in _ids(entity, "object"):
                for result in _ids(entity, "result"):
                    snapshot = self.entities.get(result)
                    if snapshot is not None and self._is_snapshot(snapshot):
                        yield snapshot
            elif self._is_snapshot(entity) and image_id in _ids(entity, "about"):
                yield entity

    def _attach_snapshot(self, container: Container, image_id: str, where: str) -> None:
        for snapshot in self._snapshots_of(image_id):
            path = self._payload(snapshot)
            digest = self._text(snapshot, "sha256", where)
            if path is None or digest is None or not is_digest("sha256:" + digest.lower()):
                continue
            size = self._text(snapshot, "contentSize", where)
            actual = path.stat().st_size
            if size is not None and size.isdigit() and int(size) != actual:
                logger.warning(
                    "%s: %s is %d bytes but the crate says %s; not using it", where, path, actual, size
                )
                continue
            container.localPath = path
            container.image_signature = "sha256:" + digest.lower()
            container.metadataLocalPath = self._sidecar(path, container.fingerprint)
            return

    def _sidecar(self, snapshot: Path, fingerprint: str | None) -> Path | None:
        """The snapshot's ``_meta.json`` beside it, when it is ours and pins the same manifest.

        A factory adopting the snapshot keeps the pin and image id from it; one
        naming another manifest (or WfExS-backend's, which names none) would
        only contradict the crate, so it is left out.
        """
        sidecar = snapshot.with_name(snapshot.name + META_JSON_POSTFIX)
        pin = fingerprint.rsplit("@", 1)[1] if fingerprint and "@" in fingerprint else None
        if pin is None or not sidecar.is_file():
            return None
        if not Path(os.path.realpath(sidecar)).is_relative_to(os.path.realpath(self.root)):
            return None
        try:
            meta = load_bounded_json(sidecar, max_bytes=_MAX_SIDECAR_BYTES)
        except (ProvenanceError, UnsafeInputError) as e:
            logger.warning("%s: ignoring %s: %s", self.where, sidecar, e)
            return None
        return sidecar if isinstance(meta, dict) and meta.get("manifest_digest") == pin else None

    def _payload(self, snapshot: Mapping[str, Any]) -> Path | None:
        """The file a snapshot entity names inside the crate, if it is there; never a path outside it."""
        entity_id = snapshot["@id"]
        if entity_id.startswith("#") or "://" in entity_id or entity_id.startswith("/"):
            return None
        relative = unquote(entity_id)
        root = Path(os.path.realpath(self.root))
        path = Path(os.path.realpath(root / relative))
        if not path.is_relative_to(root):
            logger.warning("%s: %r points outside the crate; ignored", self.where, entity_id)
            return None
        return path if path.is_file() else None

    # -- images named only by a URL -------------------------------------------------------------
    def _url_container(self, url: str) -> Container:
        ctype = (
            ContainerType.Singularity
            if url.startswith(_SIF_SCHEMES) or url.endswith(".sif")
            else ContainerType.Docker
        )
        try:
            ref = parse_reference(url, container_type=ctype)
        except InvalidReferenceError as e:
            raise ProvenanceError(
                f"{self.where}: containerImage {url!r} is not an image reference: {e}"
            ) from None
        if ref.digest is None:
            logger.warning("%s names %s by address only; it is not pinned to a digest", self.where, url)
        fingerprint = ref.pinned() if ref.digest else None
        return Container(
            origTaggedName=url,
            type=ctype,
            taggedName=ref.canonical(),
            fingerprint=fingerprint,
            source_type=ctype,
        )


def _is_docker_name(name: str, registry: str | None, where: str) -> bool:
    """Whether a DockerImage's name is a repository in a registry (the norm), not a transport
    (``docker-archive:...``, ``docker-daemon:...``) or a URL that carries its own scheme."""
    if registry is not None:
        return True
    try:
        return parse_reference(name, container_type=ContainerType.Docker).scheme == "docker"
    except InvalidReferenceError as e:
        raise ProvenanceError(f"{where}: name {name!r} is not an image reference: {e}") from None


def _docker_reference(name: str, registry: str | None, tag: str | None, pin: str | None, where: str) -> str:
    """``registry/name[:tag][@sha256:pin]``; a ``name`` that already starts with a host keeps it."""
    first = name.split("/", 1)[0]
    has_host = "/" in name and ("." in first or ":" in first or first == "localhost")
    text = name if has_host or not registry else f"{registry.rstrip('/')}/{name}"
    if tag:
        text += f":{tag}"
    if pin and not tag:
        text += f"@sha256:{pin}"
    try:
        parse_reference(text, container_type=ContainerType.Docker)
    except InvalidReferenceError as e:
        raise ProvenanceError(f"{where}: registry/name/tag do not make an image reference: {e}") from None
    return text
