"""``ContainerFactory``: the reference's public surface, shared by every engine.

A workflow engine written against WfExS-backend calls
``materializeContainers`` / ``deployContainers`` and gets ``Container``
records back; that contract lives here once. Engine modules decide policy
only (which snapshot kind, which engine, what a record says); the bytes are
moved by ``images``, ``cache`` and ``engines``.
"""

from __future__ import annotations

import abc
import atexit
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..cache import ContainerCacheHandler, SnapshotKind, default_cache_dir
from ..cache.handler import ENGINE_KINDS
from ..cache.usage import claimed_temp_dir
from ..errors import ContainerFactoryException, ContainerNotFoundException
from ..images.manifest import Platform
from ..model import Container, ContainerTaggedName
from ..references import Reference, nextflow_file_name, parse_reference
from ..storage import Tiers
from .identity import ReferenceIdentity
from .injected import plan

ContainerFileNamingMethod = Callable[[str], str]


class ContainerFactory(ReferenceIdentity):
    """Materialize (fetch, cache, stage) and deploy (load into an engine) containers."""

    def __init__(
        self,
        simpleFileNameMethod: ContainerFileNamingMethod | None = None,
        containersCacheDir: Path | str | None = None,
        stagedContainersDir: Path | str | None = None,
        progs_mapping: Mapping[str, str] | None = None,
        engine_name: str = "unset",
        tempDir: Path | str | None = None,
        *,
        platform: Platform | str | None = None,
        insecure_registries: Sequence[str] = (),
        tiers: Tiers | None = None,
    ) -> None:
        """``tiers`` (``storage.open_tiers``): read-only library dirs and a remote cache, read through
        after the local cache and before any registry, and published to after each materialize."""
        self.logger = logging.getLogger(f"{type(self).__module__}::{type(self).__name__}")
        self.simpleFileNameMethod: ContainerFileNamingMethod = simpleFileNameMethod or nextflow_file_name
        self.progs_mapping: Mapping[str, str] = dict(progs_mapping or {})
        self.containersCacheDir = Path(containersCacheDir or default_cache_dir()).absolute()
        self.platform = Platform.parse(platform) if isinstance(platform, str) else platform
        self.engine_name = engine_name
        self.cc_handler = ContainerCacheHandler(
            self.containersCacheDir,
            engine_name=engine_name,
            simple_file_name_method=self.simpleFileNameMethod,
            kind=self.kind,
            platform=self.platform_key,
            tiers=tiers,
        )
        if tempDir is None:
            # Inside the cache, so a killed run leaves its litter where `cache gc` looks.
            # Claimed for the factory's lifetime, so `cache gc` never sweeps a live factory's dir.
            claimed, self._temp_claim = claimed_temp_dir(self.cc_handler.store.tmp_dir, "factory-")
            tempDir = str(claimed)
            atexit.register(shutil.rmtree, tempDir, True)
            try:  # what killed runs left behind; never a reason to fail this one
                if _others_in(self.cc_handler.store.tmp_dir, claimed):
                    from ..cache.garbage import sweep_dead_work  # the collector loads only when needed

                    sweep_dead_work(self.cc_handler.cache)
            except OSError as e:
                self.logger.debug("could not sweep %s: %s", self.cc_handler.store.tmp_dir, e)
        self.tempDir = Path(tempDir)
        self.stagedContainersDir = (
            Path(stagedContainersDir) if stagedContainersDir else self.containersCacheDir
        )
        self.engineContainersSymlinkDir = self.cc_handler.engineContainersSymlinkDir
        self.insecure_registries = tuple(insecure_registries)
        self._environment: dict[str, str] = {}
        self._features: set[str] = set()
        self.runtime_cmd = ""
        if os.path.lexists("/proc/self/ns/user"):
            self._features.add("host_userns")

    def containers_dir(self, given: Path | str | None) -> Path:
        """The containers dir a call works in, absolute: records name absolute paths, so a
        relative ``--stage-dir`` is not joined to itself again when a record is read back."""
        return (Path(given) if given is not None else self.stagedContainersDir).absolute()

    @property
    def kind(self) -> SnapshotKind:
        """The snapshot this factory stages (its engine's natural one unless told otherwise)."""
        return ENGINE_KINDS.get(self.engine_name, "oci-layout")

    @property
    def platform_key(self) -> str | None:
        """The platform cache entries are keyed by (None: this host's default)."""
        return str(self.platform) if self.platform is not None else None

    # -- naming ---------------------------------------------------------------------------------
    def parse_tag(self, tag: ContainerTaggedName) -> Reference:
        return parse_reference(tag.origTaggedName, container_type=tag.type, registries=tag.registries)

    def generateCanonicalTag(self, container: ContainerTaggedName) -> str:
        """The fully qualified tag (``docker.io/library/busybox:latest``) a workflow's tag means."""
        return self.parse_tag(container).canonical()

    # -- the reference's two verbs ------------------------------------------------------------
    def materializeContainers(
        self,
        tagList: Sequence[ContainerTaggedName],
        containers_dir: Path | str | None = None,
        offline: bool = False,
        force: bool = False,
        injectable_containers: Sequence[Container] = (),
    ) -> list[Container]:
        """Make every accepted tag available in ``containers_dir``; raise naming *every* failure at once.

        A tag matching an injectable container (same canonical tag) is
        materialized from that container's record and snapshot instead of
        from the network, as the reference does.
        """
        cdir = self.containers_dir(containers_dir)
        planned = plan(self, tagList, injectable_containers)
        self._prefetch(planned, offline=offline, force=force)
        materialized: list[Container] = []
        failures: list[tuple[str, str]] = []
        for tag in planned:
            try:
                container = self.materializeSingleContainer(
                    tag, containers_dir=cdir, offline=offline, force=force
                )
            except ContainerFactoryException as e:
                failures.append((tag.origTaggedName, str(e)))
                continue
            if container is None:
                failures.append((tag.origTaggedName, "not found"))
            elif container not in materialized:
                materialized.append(container)
        if failures:
            raise ContainerNotFoundException.for_failures("materialize", failures)
        return materialized

    def _prefetch(self, tags: Sequence[ContainerTaggedName], *, offline: bool, force: bool) -> None:
        """Hook for engines that can fetch many images at once (shared download pool)."""

    @abc.abstractmethod
    def materializeSingleContainer(
        self,
        tag: ContainerTaggedName,
        containers_dir: Path | None = None,
        offline: bool = False,
        force: bool = False,
    ) -> Container | None: ...

    def deployContainers(
        self,
        containers_list: Sequence[Container],
        containers_dir: Path | str | None = None,
        force: bool = False,
        *,
        offline: bool = False,
    ) -> list[Container]:
        """``offline``: a snapshot found rotten is not fetched again (an error says what to run)."""
        cdir = self.containers_dir(containers_dir)
        return [
            self.deploySingleContainer(c, containers_dir=cdir, force=force, offline=offline)[0]
            for c in containers_list
            if self.AcceptsContainer(c)
        ]

    @abc.abstractmethod
    def deploySingleContainer(
        self,
        container: Container,
        containers_dir: Path | None = None,
        force: bool = False,
        *,
        offline: bool = False,
    ) -> tuple[Container, bool]:
        """Make ``container`` runnable by the engine; the bool says whether anything was loaded.

        A staged snapshot whose cached bytes rotted is evicted and, unless
        ``offline``, fetched again once."""


def _others_in(tmp: Path, own: Path) -> bool:
    """Whether ``tmp`` holds a work dir besides ``own``: only then is there anything to sweep."""
    with os.scandir(tmp) as it:
        return any(e.is_dir(follow_symlinks=False) and e.name != own.name for e in it)
