"""The public surface is a list, and this keeps it honest (as httpx's test of the same name does).

Every package's ``__init__`` says what it exports with ``__all__``; a name
imported there but left out of ``__all__`` (or listed but missing) is
either an accident or an undocumented API, and fails here.
"""

from __future__ import annotations

import importlib
import types

import pytest

PACKAGES = [
    "wfexs_like",
    "wfexs_like.images",
    "wfexs_like.registry",
    "wfexs_like.cache",
    "wfexs_like.storage",
    "wfexs_like.engines",
    "wfexs_like.container_factories",
    "wfexs_like.rocrate",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    lazy = getattr(module, "_EXPORTS", None)
    public = (
        set(lazy)
        if lazy is not None
        else {
            member
            for member, value in vars(module).items()
            if not member.startswith("_")
            and not isinstance(value, types.ModuleType)
            and member != "annotations"
        }
    )
    assert sorted(exported) == sorted(public), f"{name}: __all__ and the public names differ"
    assert len(exported) == len(set(exported)), f"{name}: __all__ repeats a name"


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves(name: str) -> None:
    module = importlib.import_module(name)
    for member in module.__all__:
        assert getattr(module, member, None) is not None, f"{name}.{member} is listed but missing"


def test_the_reference_surface_is_importable_where_wfexs_backend_has_it() -> None:
    from wfexs_like.cache import ContainerCacheHandler
    from wfexs_like.container_factories import (
        Container,
        ContainerFactory,
        ContainerNotFoundException,
        ContainerType,
        DockerContainerFactory,
        NoContainerFactory,
        PodmanContainerFactory,
        SingularityContainerFactory,
    )
    from wfexs_like.container_factories import (
        ContainerCacheHandler as HandlerAgain,
    )

    assert ContainerCacheHandler is HandlerAgain
    for cls in (
        DockerContainerFactory,
        PodmanContainerFactory,
        SingularityContainerFactory,
        NoContainerFactory,
    ):
        assert issubclass(cls, ContainerFactory)
        assert hasattr(cls, "materializeContainers") and hasattr(cls, "deployContainers")
    assert Container and ContainerNotFoundException and ContainerType


def test_importing_the_package_and_the_command_imports_nothing_heavy() -> None:
    """``wfexs-like --help`` must stay fast: YAML, HTTP, SDKs and rich load only when a command needs them."""
    import subprocess
    import sys

    heavy = ("yaml", "requests", "docker", "spython", "rich", "boto3", "filelock", "urllib3")
    code = (
        "import sys, wfexs_like, wfexs_like.cli; from wfexs_like.cli._common import build_parser; "
        "from wfexs_like.cli import COMMAND_MODULES; build_parser(COMMAND_MODULES); "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", f"imported at start-up: {out.strip()}"
