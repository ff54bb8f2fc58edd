"""Build a SIF from any ``Image`` without Apptainer installed: the SIF sink of the one image shape.

The result is what ``apptainer build x.sif docker://...`` would give, as far
as a runtime can tell: the same ``/.singularity.d`` runtime files (actions,
env scripts, a runscript made from ENTRYPOINT and CMD, labels), the same
mount points, and the same SIF objects (definition file, ``oci-config.json``,
the squashfs as primary system partition; Apptainer's ``inspect-metadata.json``,
a cache of what ``/.singularity.d`` holds, is left out). Unlike Apptainer's,
the output is reproducible: the same image always gives the same bytes, so
a SIF can be cached and verified by sha256 like any other blob.

How: the layers, merged with their whiteouts applied and the runtime files
added, are streamed as one tar into ``tar2sqfs`` (``tarstream.py``): no
root file system is written to disk, and compression runs on every core.
Where ``tar2sqfs`` is not installed, the layers are extracted to a tree
(``rootfs.py``) that ``mksquashfs`` packs, which is slower. Both give
the same tree, except that an unprivileged extraction cannot keep the
image's owners (everything becomes root's, as in Apptainer); their
squashfs bytes differ (two writers), so a SIF is reproducible for one
packer.

Reproducibility comes from three places: no timestamp is "now" (file times
come from the layers, everything we add gets the image's ``created`` time,
as do the squashfs and the SIF headers), the SIF UUID is derived from the
image digest, and the packer runs in a reproducible mode with extended
attributes left out (they would come from the build host, not the image).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import stat
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from .. import progress
from ..errors import ContainerFactoryException
from .base import Image, Layer
from .rootfs import apply_layers, remove_tree
from .sif import SifDataType, SifFsType, SifObject, SifPartType, sif_arch_code, write_sif
from .squashfs import make_squashfs, squash_tar_stream, tar2sqfs_path
from .tarstream import MergeConflict, MergedTree, Writable, write_merged_tar

log = logging.getLogger(__name__)

#: Namespace of the SIF UUIDs we derive from image digests (uuid5).
SIF_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/inab/WfExS-backend#wfexs-like-sif")
OCI_CONFIG_OBJECT_NAME = "oci-config.json"
_MAX_SQUASHFS_TIME = 2**32 - 1
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CREATED = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.\d+)?([Zz]|[+-]\d{2}:?\d{2})?$")
_HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386"}
_warned_no_tar2sqfs = False


def build_sif(
    image: Image,
    dest: Path,
    *,
    tmp_dir: Path,
    source: str | None = None,
    label: str | None = None,
    tar2sqfs: str | None = "tar2sqfs",
    mksquashfs: str = "mksquashfs",
) -> None:
    """Write ``dest`` (atomically) as the SIF of ``image``.

    The layers are read through ``Layer.uncompressed()``, so bytes that are
    not the image's raise ``IntegrityError`` and nothing is written to
    ``dest``. The SIF UUID is derived from the image digest; ``source`` is
    the reference recorded in the definition file (``from:``), defaulting to
    the digest. Everything temporary (the squashfs, before it is copied
    into the SIF) lives in one directory under ``tmp_dir`` that is removed
    even on failure; a killed build leaves it to ``cache gc``.

    ``tar2sqfs`` names the streaming packer; None, or a name not on PATH,
    means the slower ``mksquashfs`` path through an extracted tree.

    The stages are reported to ``progress.current()`` under ``label`` (the
    tag the user asked for, so the step lands on that image's bar), else
    ``source``, else the digest; a stop request (Ctrl-C) is honoured between
    layer members and while the packer runs.
    """
    config = image.config()
    digest = image.digest()
    reporter = progress.current()
    tag = label or source or digest
    created = image_created(config)
    arch = image_architecture(config)
    inner: Mapping[str, Any] = config.get("config") or {}
    deffile = definition_file(source or digest)
    Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sif-build-", dir=tmp_dir))
    try:
        squashfs = work / "rootfs.squashfs"
        tool = tar2sqfs_path(tar2sqfs)
        if tool is None:
            _warn_no_tar2sqfs(tar2sqfs)
            _squash_extracted(
                image.layers(), work, squashfs, inner, arch, deffile, created, mksquashfs, tag, tmp_dir
            )
        else:

            def add(tree: MergedTree) -> None:
                _add_runtime(_ModelTree(tree, created), inner, arch=arch, deffile=deffile)

            _squash_streamed(image.layers(), squashfs, add, created, tool, tag, tmp_dir)
        progress.check_cancelled()
        reporter.step(tag, "building SIF: writing SIF")
        oci_config = json.dumps(inner, sort_keys=True, separators=(",", ":")).encode()
        objects = [
            SifObject(SifDataType.Deffile, deffile),
            SifObject(SifDataType.GenericJSON, oci_config, name=OCI_CONFIG_OBJECT_NAME),
            SifObject(
                SifDataType.Partition,
                squashfs,
                fs_type=SifFsType.Squash,
                part_type=SifPartType.PrimSys,
                arch=arch,
            ),
        ]
        write_sif(Path(dest), objects, uuid=sif_uuid(digest), created=created)
    finally:
        remove_tree(work)


def _squash_streamed(
    layers: Sequence[Layer],
    squashfs: Path,
    add: Callable[[MergedTree], None],
    created: int,
    tool: str,
    tag: str,
    where: Path,
) -> None:
    """The merged layers as one tar into ``tar2sqfs``; once more, every layer read first, on a conflict."""
    reporter = progress.current()
    for speculate in (True, False):

        def feed(out: Writable, speculate: bool = speculate) -> None:
            write_merged_tar(
                layers,
                out,
                implicit_mtime=created,
                add=add,
                speculate=speculate,
                on_stage=lambda stage: reporter.step(tag, f"building SIF: {stage}"),
            )

        try:
            squash_tar_stream(
                feed, squashfs, mkfs_time=created, tar2sqfs=tool, what=f"the SIF of {tag}", where=where
            )
            return
        except MergeConflict as conflict:
            log.debug(
                "%s: %r was written, then changed; merging again with every layer read first", tag, conflict
            )
    raise AssertionError("a merge without speculation cannot conflict")


def _squash_extracted(
    layers: Sequence[Layer],
    work: Path,
    squashfs: Path,
    inner: Mapping[str, Any],
    arch: str,
    deffile: bytes,
    created: int,
    mksquashfs: str,
    tag: str,
    where: Path,
) -> None:
    """The fallback without ``tar2sqfs``: extract the layers to a tree, add the runtime files, pack it."""
    reporter = progress.current()
    rootfs = work / "rootfs"
    reporter.step(tag, "building SIF: extracting layers")
    apply_layers(layers, rootfs, implicit_mtime=created)
    progress.check_cancelled()
    reporter.step(tag, "building SIF: adding runtime files")
    add_runtime_files(rootfs, inner, arch=arch, deffile=deffile, mtime=created)
    reporter.step(tag, "building SIF: squashing")
    make_squashfs(
        rootfs, squashfs, mkfs_time=created, mksquashfs=mksquashfs, what=f"the SIF of {tag}", where=where
    )
    remove_tree(rootfs)


def _warn_no_tar2sqfs(tar2sqfs: str | None) -> None:
    global _warned_no_tar2sqfs
    if tar2sqfs and not _warned_no_tar2sqfs:
        _warned_no_tar2sqfs = True
        log.warning(
            "%s not found: SIFs are built through a root file system extracted to disk, more slowly; "
            "install squashfs-tools-ng (apt-get install squashfs-tools-ng)",
            tar2sqfs,
        )


def sif_uuid(source_digest: str) -> uuid.UUID:
    """The SIF UUID of an image: stable for one digest, distinct across digests."""
    return uuid.uuid5(SIF_UUID_NAMESPACE, source_digest)


def definition_file(source: str) -> bytes:
    ref = source.removeprefix("docker://")
    return f"bootstrap: docker\nfrom: {ref}\n".encode()


def image_created(config: Mapping[str, Any]) -> int:
    """The image's ``created`` time in epoch seconds (0 when absent or unreadable).

    Clamped to what squashfs can store (unsigned 32 bits), so that the SIF
    headers and the file system carry the same value.
    """
    text = config.get("created")
    match = _CREATED.match(text.strip()) if isinstance(text, str) else None
    if not match:
        return 0
    date, clock, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z", "z") else zone
    try:
        seconds = int(datetime.fromisoformat(f"{date}T{clock}{zone}").timestamp())
    except ValueError:
        return 0
    return min(max(seconds, 0), _MAX_SQUASHFS_TIME)


def image_architecture(config: Mapping[str, Any]) -> str:
    arch = config.get("architecture")
    if not arch:
        machine = platform.machine().lower()
        arch = _HOST_ARCH.get(machine, machine)
        log.warning("image config names no architecture; assuming this host's (%s)", arch)
    try:
        sif_arch_code(str(arch))
    except ValueError as exc:
        raise ContainerFactoryException(f"cannot build a SIF for this image: {exc}") from None
    return str(arch)


# ---------------------------------------------------------------------------------------
# /.singularity.d and the rest of what Apptainer adds to a Docker-sourced rootfs

_SOURCE_ENV = """for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done
"""

_ACTIONS = {
    "exec": "#!/bin/sh\n" + _SOURCE_ENV + '\nexec "$@"\n',
    "run": "#!/bin/sh\n"
    + _SOURCE_ENV
    + """
if [ -n "${APPTAINER_APPNAME:-}" ]; then
    for script in "/scif/apps/${APPTAINER_APPNAME}/scif/runscript" /scif/apps/singularity/scif/runscript; do
        if [ -x "$script" ]; then
            exec "$script" "$@"
        fi
    done
    echo "No runscript for the container app ${APPTAINER_APPNAME}" >&2
    exit 1
fi
if [ -x /.singularity.d/runscript ]; then
    exec /.singularity.d/runscript "$@"
fi
echo "This container has no runscript: running /bin/sh" >&2
exec /bin/sh "$@"
""",
    "shell": "#!/bin/sh\n"
    + _SOURCE_ENV
    + """
if [ -n "${APPTAINER_SHELL:-}" ] && [ -x "$APPTAINER_SHELL" ]; then
    exec "$APPTAINER_SHELL" "$@"
fi
if [ -x /bin/bash ]; then
    SHELL=/bin/bash
    PS1="Apptainer ${APPTAINER_NAME:-}:\\w> "
    export SHELL PS1
    exec /bin/bash --norc "$@"
fi
if [ -x /bin/sh ]; then
    SHELL=/bin/sh
    export SHELL
    exec /bin/sh "$@"
fi
echo "This container has no /bin/sh to run a shell with" >&2
exit 1
""",
    # An instance's PID 1 waits for SIGCONT before the start script may run.
    "start": "#!/bin/sh\nkill -CONT 1\n\n"
    + _SOURCE_ENV
    + """
if [ -x /.singularity.d/startscript ]; then
    exec /.singularity.d/startscript
fi
""",
    "test": "#!/bin/sh\n"
    + _SOURCE_ENV
    + """
if [ -n "${APPTAINER_APPNAME:-}" ]; then
    for script in "/scif/apps/${APPTAINER_APPNAME}/scif/test" /scif/apps/singularity/scif/test; do
        if [ -x "$script" ]; then
            exec "$script" "$@"
        fi
    done
    echo "No test for the container app ${APPTAINER_APPNAME}" >&2
    exit 1
fi
if [ -x /.singularity.d/test ]; then
    exec /.singularity.d/test "$@"
fi
exec /bin/sh -c true
""",
}

_ENV_SCRIPTS = {
    "01-base.sh": "#!/bin/sh\n# Sourced first by every action; nothing to set for a Docker/OCI image.\n",
    "90-environment.sh": "#!/bin/sh\n# %environment of a definition file; /environment links here.\n",
    "94-appsbase.sh": "#!/bin/sh\n# Globals of SCIF apps; this image has none.\n",
    "95-apps.sh": """#!/bin/sh
# With --app NAME, put the SCIF app's own directories first and source its environment.
if [ -n "${APPTAINER_APPNAME:-}" ]; then
    export APPTAINER_APPNAME
    app="/scif/apps/${APPTAINER_APPNAME}"
    if [ ! -d "$app" ]; then
        echo "Could not locate the container application: ${APPTAINER_APPNAME}" >&2
        exit 1
    fi
    SCIF_APPS=/scif/apps
    SCIF_APPROOT="$app"
    export SCIF_APPS SCIF_APPROOT
    PATH="$app:$PATH"
    if [ -d "$app/bin" ]; then
        PATH="$app/bin:$PATH"
    fi
    if [ -d "$app/lib" ]; then
        LD_LIBRARY_PATH="$app/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export LD_LIBRARY_PATH
    fi
    for appenv in "$app/scif/env/01-base.sh" "$app/scif/env/90-environment.sh"; do
        if [ -f "$appenv" ]; then
            . "$appenv"
        fi
    done
    export PATH
fi
""",
    "99-base.sh": """#!/bin/sh
# Host libraries bound in at run time (--nv, --rocm) land in /.singularity.d/libs.
LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/.singularity.d/libs"
PS1="Apptainer> "
export LD_LIBRARY_PATH PS1
""",
    "99-runtimevars.sh": """#!/bin/sh
# PATH changes asked for at run time (--env PATH=..., PREPEND_PATH, APPEND_PATH) win over the image's.
if [ -n "${SING_USER_DEFINED_PREPEND_PATH:-}" ]; then
    PATH="${SING_USER_DEFINED_PREPEND_PATH}:${PATH}"
fi
if [ -n "${SING_USER_DEFINED_APPEND_PATH:-}" ]; then
    PATH="${PATH}:${SING_USER_DEFINED_APPEND_PATH}"
fi
if [ -n "${SING_USER_DEFINED_PATH:-}" ]; then
    PATH="${SING_USER_DEFINED_PATH}"
fi
unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH
export PATH
""",
}

# Mount points the runtime binds onto; left alone when the image has them in any form.
_MOUNT_POINTS = ("dev", "proc", "sys", "tmp", "home", "root", "etc", "var", "var/tmp")
# Bind targets for the host's files; must be regular files.
_BIND_FILES = ("etc/hosts", "etc/resolv.conf")
_TOP_LINKS = {
    "singularity": ".singularity.d/runscript",
    "environment": ".singularity.d/env/90-environment.sh",
    ".run": ".singularity.d/actions/run",
    ".exec": ".singularity.d/actions/exec",
    ".shell": ".singularity.d/actions/shell",
    ".test": ".singularity.d/actions/test",
}


def _single_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _args_quoted(args: Sequence[str]) -> str:
    """Each argument in double quotes with \\ " ` $ escaped: Apptainer's OCI_CMD/OCI_ENTRYPOINT form."""
    out = []
    for arg in args:
        escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$")
        out.append(f'"{escaped}"')
    return " ".join(out)


def _string_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):  # docker accepts a bare string for Cmd/Entrypoint
        return [value]
    return [str(v) for v in value]


def render_runscript(entrypoint: Sequence[str], cmd: Sequence[str]) -> str:
    """The runscript Apptainer derives from ENTRYPOINT and CMD.

    ``run`` arguments replace CMD and follow ENTRYPOINT. By default the
    resulting command line goes through the shell (``eval``), as Apptainer
    does; with ``APPTAINER_NO_EVAL``/``SINGULARITY_NO_EVAL`` set (what
    ``--no-eval`` and OCI mode set) the words are used literally, as Docker
    would.
    """
    literal_cmd = " ".join(_single_quote(a) for a in cmd)
    literal_ep = " ".join(_single_quote(a) for a in entrypoint)
    lines = [
        "#!/bin/sh",
        "# Made from the image's ENTRYPOINT and CMD: arguments given to `run` replace CMD.",
        f"OCI_ENTRYPOINT={_single_quote(_args_quoted(entrypoint))}",
        f"OCI_CMD={_single_quote(_args_quoted(cmd))}",
        "",
        'if [ -n "${APPTAINER_NO_EVAL:-}${SINGULARITY_NO_EVAL:-}" ]; then',
    ]
    if cmd:
        lines += ["    if [ $# -eq 0 ]; then", f"        set -- {literal_cmd}", "    fi"]
    if entrypoint:
        lines.append(f'    set -- {literal_ep} "$@"')
    lines += [
        "else",
        '    CMDLINE_ARGS=""',
        '    for arg in "$@"; do',
        '        CMDLINE_ARGS="${CMDLINE_ARGS} \\"$arg\\""',
        "    done",
        "    if [ $# -gt 0 ]; then",
        '        SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${CMDLINE_ARGS}"',
        "    else",
        '        SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${OCI_CMD}"',
        "    fi",
        '    eval "set -- ${SINGULARITY_OCI_RUN}"',
        "fi",
        "if [ $# -eq 0 ]; then",
        '    echo "This container has neither ENTRYPOINT nor CMD: give the command to run" >&2',
        "    exit 1",
        "fi",
        'exec "$@"',
        "",
    ]
    return "\n".join(lines)


def render_docker_env(env: Sequence[str]) -> str:
    """``10-docker2singularity.sh``: the image's Env, exported the way Apptainer does.

    PATH is always the image's; any other variable keeps a value the caller
    already set (``--env``, or passed through from the host).
    """
    lines = ["#!/bin/sh", "# The image config's Env."]
    for entry in env:
        name, sep, value = entry.partition("=")
        if not _ENV_NAME.match(name):
            log.warning("image Env entry %r is not a shell variable name; left out of the SIF", name)
            continue
        if not sep:
            lines.append(f'{name}="${{{name}:-}}"')
        elif name == "PATH":
            lines.append(f"PATH={_single_quote(value)}")
        else:
            lines.append(f'[ -n "${{{name}:-}}" ] || {name}={_single_quote(value)}')
        lines.append(f"export {name}")
    return "\n".join(lines) + "\n"


def render_labels(inner: Mapping[str, Any], *, arch: str, deffile: bytes) -> str:
    """``labels.json``: the image's labels, plus the build labels Apptainer adds where absent."""
    labels = {str(k): str(v) for k, v in (inner.get("Labels") or {}).items()}
    build = {"org.label-schema.schema-version": "1.0"}
    for line in deffile.decode().splitlines():
        key, _, value = line.partition(":")
        build[f"org.label-schema.usage.singularity.deffile.{key.strip()}"] = value.strip()
    build["org.opencontainers.image.architecture"] = arch
    build["org.label-schema.build-arch"] = arch
    for key, value in build.items():
        labels.setdefault(key, value)
    return json.dumps(labels, indent="\t", sort_keys=True)


class _Tree(Protocol):
    """Where the runtime files go: an extracted tree on disk, or the merged tree in memory.

    Both see the image as ``lstat`` does: no symlink the image holds is followed.
    """

    def directory(self, rel: str, *, replace: bool) -> object | None: ...

    def write(self, rel: str, content: str | bytes, mode: int) -> None: ...

    def bind_target(self, rel: str) -> None: ...

    def symlink(self, rel: str, target: str) -> None: ...

    def finish(self) -> None: ...


def _not_a_directory(parent_rel: str, rel: str) -> None:
    log.warning("/%s is not a directory in this image; not adding /%s", parent_rel, rel)


class _ModelTree:
    """The runtime files added to a ``MergedTree``: created entries are root's, at the build time."""

    def __init__(self, tree: MergedTree, mtime: int) -> None:
        self.tree = tree
        self.mtime = mtime

    def directory(self, rel: str, *, replace: bool) -> object | None:
        return True if self.tree.ensure_dir(rel, replace=replace, mtime=self.mtime) else None

    def write(self, rel: str, content: str | bytes, mode: int) -> None:
        parent_rel = rel.rpartition("/")[0]
        if parent_rel:
            self.tree.ensure_dir(parent_rel, replace=True, mtime=self.mtime)
        data = content.encode() if isinstance(content, str) else content
        self.tree.add_file(rel, data, mode, mtime=self.mtime)

    def bind_target(self, rel: str) -> None:
        parent_rel = rel.rpartition("/")[0]
        if not self.tree.ensure_dir(parent_rel, replace=False, mtime=self.mtime):
            _not_a_directory(parent_rel, rel)
            return
        if self.tree.kind_of(rel) != "file":
            self.tree.add_file(rel, b"", 0o644, mtime=self.mtime)

    def symlink(self, rel: str, target: str) -> None:
        self.tree.add_symlink(rel, target, mtime=self.mtime)

    def finish(self) -> None:
        pass


class _RuntimeTree:
    """Adds files to an extracted rootfs without following any symlink the image holds.

    Records what it creates and the original mtimes of the directories it
    touches, so ``finish`` can give new entries the fixed build time and
    put the image's own directory times back.
    """

    def __init__(self, root: Path, mtime: int) -> None:
        self.root = Path(os.path.realpath(root))
        self.mtime = mtime
        self.created: list[Path] = []
        self.touched: dict[Path, os.stat_result] = {}

    def _touch(self, parent: Path) -> None:
        """Remember a directory's mode and times before changing its content.

        The image may make it read-only (an unprivileged build cannot write
        into a 0555 /etc), so the owner gets write access until ``finish``.
        """
        if parent not in self.touched:
            st = os.lstat(parent)
            self.touched[parent] = st
            if not os.access(parent, os.W_OK | os.X_OK, follow_symlinks=False):
                os.chmod(parent, stat.S_IMODE(st.st_mode) | 0o700)

    def _clear(self, path: Path) -> None:
        self._touch(path.parent)
        remove_tree(path)

    def directory(self, rel: str, *, replace: bool) -> Path | None:
        """The real directory ``rel``, created as needed.

        A component that is a symlink or a file is replaced when ``replace``
        (our own ``.singularity.d``); otherwise the image wins and None says
        "leave it".
        """
        cur = self.root
        for comp in rel.split("/"):
            nxt = cur / comp
            try:
                st = os.lstat(nxt)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISDIR(st.st_mode):
                if not replace:
                    return None
                self._clear(nxt)
                st = None
            if st is None:
                self._touch(cur)
                os.mkdir(nxt, 0o755)
                os.chmod(nxt, 0o755)
                self.created.append(nxt)
            cur = nxt
        return cur

    def write(self, rel: str, content: str | bytes, mode: int) -> None:
        parent_rel, _, name = rel.rpartition("/")
        parent = self.directory(parent_rel, replace=True) if parent_rel else self.root
        assert parent is not None
        self._write(parent / name, content.encode() if isinstance(content, str) else content, mode)

    def _write(self, path: Path, data: bytes, mode: int) -> None:
        if os.path.lexists(path):
            self._clear(path)
        self._touch(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            os.fchmod(out.fileno(), mode)
        self.created.append(path)

    def bind_target(self, rel: str) -> None:
        """An empty regular file for the runtime to bind onto, unless the image has one."""
        parent_rel, _, name = rel.rpartition("/")
        parent = self.directory(parent_rel, replace=False)
        if parent is None:
            _not_a_directory(parent_rel, rel)
            return
        path = parent / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISREG(st.st_mode):
            return
        self._write(path, b"", 0o644)

    def symlink(self, rel: str, target: str) -> None:
        path = self.root / rel
        if os.path.lexists(path):
            return
        self._touch(path.parent)
        os.symlink(target, path)
        self.created.append(path)

    def finish(self) -> None:
        for path in self.created:
            os.utime(path, (self.mtime, self.mtime), follow_symlinks=False)
        created = set(self.created)
        for path in sorted(self.touched, key=lambda p: len(p.parts), reverse=True):
            st = self.touched[path]
            if path not in created and os.path.lexists(path):
                os.chmod(path, stat.S_IMODE(st.st_mode))
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def add_runtime_files(
    rootfs: Path, inner: Mapping[str, Any], *, arch: str, deffile: bytes, mtime: int
) -> None:
    """Add what Apptainer's Docker/OCI conversion adds to an extracted tree, in place, with fixed times.

    ``inner`` is the ``config`` object of the image config (Env, Entrypoint,
    Cmd, Labels).
    """
    _add_runtime(_RuntimeTree(rootfs, mtime), inner, arch=arch, deffile=deffile)


def _add_runtime(tree: _Tree, inner: Mapping[str, Any], *, arch: str, deffile: bytes) -> None:
    for rel in (".singularity.d/actions", ".singularity.d/env", ".singularity.d/libs"):
        tree.directory(rel, replace=True)
    for rel in _MOUNT_POINTS:
        tree.directory(rel, replace=False)
    for rel in _BIND_FILES:
        tree.bind_target(rel)
    for name, script in _ACTIONS.items():
        tree.write(f".singularity.d/actions/{name}", script, 0o755)
    for name, script in _ENV_SCRIPTS.items():
        tree.write(f".singularity.d/env/{name}", script, 0o755)
    tree.write(
        ".singularity.d/env/10-docker2singularity.sh",
        render_docker_env(_string_list(inner.get("Env"))),
        0o755,
    )
    runscript = render_runscript(_string_list(inner.get("Entrypoint")), _string_list(inner.get("Cmd")))
    tree.write(".singularity.d/runscript", runscript, 0o755)
    tree.write(".singularity.d/startscript", "#!/bin/sh\n", 0o755)
    tree.write(".singularity.d/labels.json", render_labels(inner, arch=arch, deffile=deffile), 0o644)
    tree.write(".singularity.d/Singularity", deffile, 0o644)
    for name, target in _TOP_LINKS.items():
        tree.symlink(name, target)
    tree.finish()
