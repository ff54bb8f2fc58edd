"""``ContainerFactory``: the reference's public surface, shared by every engine.

A workflow engine written against WfExS-backend calls
``materializeContainers`` / ``deployContainers`` and gets ``Container``
records back; that contract lives here once. Engine modules implement only
``materializeSingleContainer`` and ``deploySingleContainer``.
"""

from __future__ import annotations

import abc
import atexit
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from ..cache.handler import ContainerCacheHandler
from ..cache.paths import default_cache_dir
from ..errors import ContainerEngineException, ContainerFactoryException, ContainerNotFoundException
from ..images.manifest import Platform
from ..model import Container, ContainerTaggedName, ContainerType
from ..references import Reference, nextflow_file_name, parse_reference

ContainerFileNamingMethod = Callable[[str], str]

logger = logging.getLogger(__name__)


def run_engine(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    input: bytes | None = None,
    what: str = "",
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run an engine command; failures become ContainerEngineException with command, code and stderr."""
    try:
        proc = subprocess.run(
            list(cmd),
            env=dict(env) if env is not None else None,
            capture_output=True,
            timeout=timeout,
            input=input,
            check=False,
            cwd=cwd,
        )
    except FileNotFoundError as e:
        raise ContainerEngineException(
            f"{cmd[0]} is not installed or not on PATH; install it or pick another --engine",
            command=cmd,
        ) from e
    except subprocess.TimeoutExpired as e:
        raise ContainerEngineException(
            f"{what or cmd[0]} timed out after {timeout} s", command=cmd, stderr=e.stderr
        ) from e
    if proc.returncode != 0:
        raise ContainerEngineException(
            f"{what or cmd[0]} failed", command=cmd, returncode=proc.returncode, stderr=proc.stderr
        )
    return proc


class ContainerFactory(abc.ABC):
    """Materialize (fetch, cache, stage) and deploy (load into an engine) containers."""

    ENABLED: ClassVar[bool] = True

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
    ) -> None:
        self.logger = logging.getLogger(f"{type(self).__module__}::{type(self).__name__}")
        self.simpleFileNameMethod: ContainerFileNamingMethod = simpleFileNameMethod or nextflow_file_name
        self.progs_mapping: Mapping[str, str] = dict(progs_mapping or {})
        self.containersCacheDir = Path(containersCacheDir or default_cache_dir()).absolute()
        if tempDir is None:
            tempDir = tempfile.mkdtemp(prefix="wfexs-like-", suffix="-tmp")
            atexit.register(shutil.rmtree, tempDir, True)
        self.tempDir = Path(tempDir)
        self.cc_handler = ContainerCacheHandler(
            self.containersCacheDir,
            engine_name=engine_name,
            simple_file_name_method=self.simpleFileNameMethod,
        )
        self.engine_name = engine_name
        self.stagedContainersDir = (
            Path(stagedContainersDir) if stagedContainersDir else self.containersCacheDir
        )
        self.engineContainersSymlinkDir = self.cc_handler.engineContainersSymlinkDir
        self.platform = Platform.parse(platform) if isinstance(platform, str) else platform
        self.insecure_registries = tuple(insecure_registries)
        self._environment: dict[str, str] = {}
        self._features: set[str] = set()
        self.runtime_cmd = ""
        if os.path.lexists("/proc/self/ns/user"):
            self._features.add("host_userns")

    # -- identity -----------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def ContainerType(cls) -> ContainerType: ...

    @classmethod
    def AcceptsContainerType(cls, container_type: ContainerType | set[ContainerType]) -> bool:
        types = container_type if isinstance(container_type, set) else {container_type}
        return cls.ContainerType() in types

    @classmethod
    def AcceptsContainer(cls, container: ContainerTaggedName) -> bool:
        if isinstance(container, Container) and container.source_type is not None:
            return cls.AcceptsContainerType(container.source_type) or cls.AcceptsContainerType(container.type)
        return cls.AcceptsContainerType(container.type)

    @property
    def environment(self) -> Mapping[str, str]:
        return self._environment

    @property
    def containerType(self) -> ContainerType:
        return self.ContainerType()

    @property
    def command(self) -> str:
        return self.runtime_cmd

    @property
    def cacheDir(self) -> Path:
        return self.engineContainersSymlinkDir

    @property
    def architecture(self) -> tuple[str, str]:
        """(operating system, machine) of this host, as the reference reports them."""
        return platform.system().lower(), platform.machine()

    def supportsFeature(self, feat: str) -> bool:
        return feat in self._features

    def engine_version(self) -> str:
        if not self.runtime_cmd:
            raise ContainerEngineException(f"{type(self).__name__} has no engine command")
        env = {**os.environ, **self._environment}
        out = run_engine([self.runtime_cmd, "--version"], env=env, timeout=60, what="engine version")
        return out.stdout.decode("utf-8", errors="replace").strip()

    # -- naming ---------------------------------------------------------------
    def parse_tag(self, tag: ContainerTaggedName) -> Reference:
        return parse_reference(tag.origTaggedName, container_type=tag.type, registries=tag.registries)

    def generateCanonicalTag(self, container: ContainerTaggedName) -> str:
        """The fully qualified tag (``docker.io/library/busybox:latest``) a workflow's tag means."""
        return self.parse_tag(container).canonical()

    # -- the reference's two verbs ------------------------------------------
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
        cdir = Path(containers_dir) if containers_dir is not None else self.stagedContainersDir
        accepted = [t for t in tagList if self.AcceptsContainer(t)]
        injectables = self._index_injectables(injectable_containers)
        planned: list[ContainerTaggedName] = []
        for tag in accepted:
            use: ContainerTaggedName = tag
            try:
                canonical = self.generateCanonicalTag(tag)
            except ContainerFactoryException:
                canonical = None
            if canonical is not None and canonical in injectables:
                use = injectables[canonical]
                self.logger.debug("container %s mapped to injectable %s", tag.origTaggedName, use.taggedName)
            planned.append(use)

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
            lines = "\n".join(f"  - {name}: {reason}" for name, reason in failures)
            raise ContainerNotFoundException(
                f"could not materialize {len(failures)} container(s):\n{lines}", failures=failures
            )
        return materialized

    def _index_injectables(self, injectables: Sequence[Container]) -> dict[str, Container]:
        out: dict[str, Container] = {}
        for c in injectables:
            if not self.AcceptsContainer(c):
                continue
            for name in (c.taggedName, c.origTaggedName):
                if not name:
                    continue
                try:
                    out.setdefault(
                        self.generateCanonicalTag(ContainerTaggedName(name, c.type, c.registries)), c
                    )
                except ContainerFactoryException:
                    continue
        return out

    def _prefetch(self, tags: Sequence[ContainerTaggedName], *, offline: bool, force: bool) -> None:  # noqa: B027
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
    ) -> list[Container]:
        cdir = Path(containers_dir) if containers_dir is not None else self.stagedContainersDir
        deployed: list[Container] = []
        for c in containers_list:
            if self.AcceptsContainer(c):
                container, _ = self.deploySingleContainer(c, containers_dir=cdir, force=force)
                deployed.append(container)
        return deployed

    @abc.abstractmethod
    def deploySingleContainer(
        self,
        container: Container,
        containers_dir: Path | None = None,
        force: bool = False,
    ) -> tuple[Container, bool]:
        """Make ``container`` runnable by the engine; the bool says whether anything was loaded."""
