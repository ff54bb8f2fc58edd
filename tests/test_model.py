"""Tests for the container types and the layering of model, references and container_types."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import wfexs_like
from wfexs_like import container_types, model, references
from wfexs_like.container_types import ContainerType, coerce_container_type
from wfexs_like.model import Container, ContainerTaggedName

PACKAGE_DIR = Path(wfexs_like.__file__).parent


def _package_imports(module: str) -> tuple[set[str], list[int]]:
    """(package modules imported, lines of imports not at module level) in one source file."""
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            imported.add(node.module or "")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wfexs_like"):
            imported.add((node.module or "").removeprefix("wfexs_like."))
        elif isinstance(node, ast.Import):
            imported.update(
                a.name.removeprefix("wfexs_like.") for a in node.names if a.name.startswith("wfexs_like")
            )
    top_level = {id(node) for node in tree.body}
    nested = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top_level
    ]
    return imported, nested


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("container_types", {"errors"}),
        ("references", {"errors", "container_types"}),
        ("model", {"errors", "container_types", "references"}),
    ],
)
def test_layering_has_no_cycle_and_no_hidden_imports(module: str, allowed: set[str]) -> None:
    imported, nested = _package_imports(module)
    assert imported <= allowed, f"{module} imports {sorted(imported - allowed)}"
    assert nested == [], f"{module} imports inside functions at lines {nested}"


def test_container_type_is_one_class_everywhere() -> None:
    assert model.ContainerType is ContainerType
    assert wfexs_like.ContainerType is ContainerType
    assert "ContainerType" in model.__all__
    assert references.ContainerType is ContainerType
    assert container_types.__all__ == ["ContainerType", "coerce_container_type"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (ContainerType.Podman, ContainerType.Podman),
        ("docker", ContainerType.Docker),
        ("Docker", ContainerType.Docker),
        ("singularity", ContainerType.Singularity),
        ("Apptainer", ContainerType.Singularity),
        ("none", ContainerType.NoContainer),
        ("NoContainer", ContainerType.NoContainer),
    ],
)
def test_coerce_container_type_reads_values_and_names(
    value: ContainerType | str, expected: ContainerType
) -> None:
    assert coerce_container_type(value) is expected


def test_coerce_container_type_names_the_choices() -> None:
    with pytest.raises(
        ValueError, match=r"unknown container type 'rkt'; expected one of: conda, docker, none"
    ):
        coerce_container_type("rkt")


def test_records_coerce_their_types() -> None:
    tagged = ContainerTaggedName("busybox", "podman", registries={"Docker": "quay.io"})  # type: ignore[arg-type,dict-item]
    assert tagged.type is ContainerType.Podman
    assert tagged.registries == {ContainerType.Docker: "quay.io"}
    container = Container("busybox", "docker", source_type="Docker", localPath="x.tar")  # type: ignore[arg-type]
    assert container.type is ContainerType.Docker
    assert container.source_type is ContainerType.Docker
    assert container.localPath == Path("x.tar")
