"""Tests for container tag parsing, canonical forms and file names."""

from __future__ import annotations

import dataclasses
import re
import string
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wfexs_like.errors import ContainerFactoryException, InvalidReferenceError, quote
from wfexs_like.model import Container, ContainerType
from wfexs_like.references import (
    DOCKER_HUB,
    SINGULARITY_HUB,
    SYLABS_LIBRARY,
    Reference,
    format_reference,
    nextflow_file_name,
    parse_reference,
)

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA256_B = "sha256:" + "fedcba9876543210" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8

# ---------------------------------------------------------------------------
# Canonicalisation of real-world tags
# ---------------------------------------------------------------------------

CANONICAL = [
    # Docker Hub official images
    ("busybox", "docker.io/library/busybox:latest"),
    ("ubuntu:24.04", "docker.io/library/ubuntu:24.04"),
    ("library/ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
    ("docker.io/nginx", "docker.io/library/nginx:latest"),
    ("python:3.12-slim-bookworm", "docker.io/library/python:3.12-slim-bookworm"),
    # the official Docker-in-Docker image, not a "docker:" scheme
    ("docker:24-dind", "docker.io/library/docker:24-dind"),
    # Docker Hub user images
    ("biocontainers/samtools:v1.9-4-deb_cv1", "docker.io/biocontainers/samtools:v1.9-4-deb_cv1"),
    ("nextflow/nextflow:23.10.1", "docker.io/nextflow/nextflow:23.10.1"),
    ("continuumio/miniconda3", "docker.io/continuumio/miniconda3:latest"),
    # Docker Hub aliases
    ("index.docker.io/library/alpine:3.19", "docker.io/library/alpine:3.19"),
    ("index.docker.io/alpine:3.19", "docker.io/library/alpine:3.19"),
    ("registry-1.docker.io/bitnami/redis:7.2", "docker.io/bitnami/redis:7.2"),
    ("registry.hub.docker.com/library/python:3.11", "docker.io/library/python:3.11"),
    # docker:// prefix
    ("docker://ubuntu:24.04", "docker.io/library/ubuntu:24.04"),
    ("docker:///ubuntu", "docker.io/library/ubuntu:latest"),
    ("docker:/ubuntu", "docker.io/library/ubuntu:latest"),
    (
        "docker://quay.io/biocontainers/fastqc:0.12.1--hdfd78af_0",
        "quay.io/biocontainers/fastqc:0.12.1--hdfd78af_0",
    ),
    # biocontainers on quay.io
    ("quay.io/biocontainers/samtools:1.15--h1170115_1", "quay.io/biocontainers/samtools:1.15--h1170115_1"),
    ("quay.io/biocontainers/multiqc:1.14--pyhdfd78af_0", "quay.io/biocontainers/multiqc:1.14--pyhdfd78af_0"),
    ("quay.io/biocontainers/bwa:0.7.17--hed695b0_7", "quay.io/biocontainers/bwa:0.7.17--hed695b0_7"),
    # other public registries
    ("ghcr.io/astral-sh/uv:0.4.0", "ghcr.io/astral-sh/uv:0.4.0"),
    ("ghcr.io/homebrew/core/wget:1.21.4", "ghcr.io/homebrew/core/wget:1.21.4"),
    ("nvcr.io/nvidia/pytorch:24.01-py3", "nvcr.io/nvidia/pytorch:24.01-py3"),
    ("public.ecr.aws/docker/library/python:3.12-slim", "public.ecr.aws/docker/library/python:3.12-slim"),
    ("public.ecr.aws/lambda/python:3.12", "public.ecr.aws/lambda/python:3.12"),
    ("mcr.microsoft.com/dotnet/sdk:8.0", "mcr.microsoft.com/dotnet/sdk:8.0"),
    ("gcr.io/distroless/static-debian12:nonroot", "gcr.io/distroless/static-debian12:nonroot"),
    (
        "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-latest",
        "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-latest",
    ),
    (
        "registry.gitlab.com/group/sub/project/tools/image",
        "registry.gitlab.com/group/sub/project/tools/image:latest",
    ),
    # registries with ports, localhost, IP addresses, case
    ("localhost:5000/foo/bar:1", "localhost:5000/foo/bar:1"),
    ("localhost/myimage", "localhost/myimage:latest"),
    ("127.0.0.1:5000/busybox:1.36", "127.0.0.1:5000/busybox:1.36"),
    ("[::1]:5000/busybox:1.36", "[::1]:5000/busybox:1.36"),
    ("[0:0:0:0:0:0:0:1]:5000/busybox", "[::1]:5000/busybox:latest"),
    ("registry.example.org:8443/team/tool:2.0", "registry.example.org:8443/team/tool:2.0"),
    ("Registry.Example.ORG/team/tool", "registry.example.org/team/tool:latest"),
    ("docker:5000/team/img:1", "docker:5000/team/img:1"),
    # digest-pinned, with and without tag
    (f"busybox@{SHA256}", f"docker.io/library/busybox@{SHA256}"),
    (f"busybox:1.36@{SHA256}", f"docker.io/library/busybox:1.36@{SHA256}"),
    (
        f"quay.io/biocontainers/samtools:1.15--h1170115_1@{SHA256}",
        f"quay.io/biocontainers/samtools:1.15--h1170115_1@{SHA256}",
    ),
    (f"localhost:5000/ns/img@{SHA512}", f"localhost:5000/ns/img@{SHA512}"),
    (f"docker://ghcr.io/org/img:v2@{SHA256}", f"ghcr.io/org/img:v2@{SHA256}"),
    # Sylabs library
    ("library://sylabs/examples/lolcow:latest", "library://sylabs/examples/lolcow:latest"),
    ("library://sylabs/examples/lolcow", "library://sylabs/examples/lolcow:latest"),
    ("library://alpine", "library://alpine:latest"),
    ("library:///sylabs/examples/lolcow:1.0", "library://sylabs/examples/lolcow:1.0"),
    ("library://cloud.sylabs.io/sylabs/examples/lolcow", "library://sylabs/examples/lolcow:latest"),
    (
        "library://library.example.org/entity/coll/image:1.0",
        "library://library.example.org/entity/coll/image:1.0",
    ),
    # ORAS and Singularity Hub
    ("oras://ghcr.io/org/image.sif:v1", "oras://ghcr.io/org/image.sif:v1"),
    ("oras://localhost:5000/sif/alpine", "oras://localhost:5000/sif/alpine:latest"),
    ("shub://vsoch/hello-world", "shub://singularity-hub.org/vsoch/hello-world:latest"),
    (
        "shub://singularity-hub.org/vsoch/hello-world:latest",
        "shub://singularity-hub.org/vsoch/hello-world:latest",
    ),
    # SIF files behind URLs
    (
        "https://sif.example.org/singularity/samtools:1.15--h1170115_1",
        "https://sif.example.org/singularity/samtools:1.15--h1170115_1",
    ),
    ("HTTPS://Example.ORG:443/images/x.sif", "https://example.org/images/x.sif"),
    ("http://127.0.0.1:8080/x.sif?token=abc", "http://127.0.0.1:8080/x.sif?token=abc"),
    # local files
    ("/abs/images/x.sif", "/abs/images/x.sif"),
    ("/abs/images/../other/./y.sif", "/abs/other/y.sif"),
    ("file:///abs/y.sif", "/abs/y.sif"),
    ("file://localhost/abs/with%20space.sif", "/abs/with space.sif"),
]


@pytest.mark.parametrize(("tag", "expected"), CANONICAL)
def test_canonical_form(tag: str, expected: str) -> None:
    ref = parse_reference(tag)
    assert ref.canonical() == expected
    assert str(ref) == expected
    # The canonical form is a fixed point and reads back to the same value.
    assert parse_reference(expected) == ref
    assert parse_reference(format_reference(ref)) == ref


def test_table_is_big_enough() -> None:
    assert len(CANONICAL) >= 30


@pytest.mark.parametrize(
    ("tag", "fields"),
    [
        ("busybox", ("docker", DOCKER_HUB, "library/busybox", "latest", None)),
        (f"busybox@{SHA256}", ("docker", DOCKER_HUB, "library/busybox", None, SHA256)),
        (f"busybox:1.36@{SHA256}", ("docker", DOCKER_HUB, "library/busybox", "1.36", SHA256)),
        ("localhost:5000/foo/bar:1", ("docker", "localhost:5000", "foo/bar", "1", None)),
        ("[::1]:5000/busybox", ("docker", "[::1]:5000", "busybox", "latest", None)),
        ("quay.io/busybox", ("docker", "quay.io", "busybox", "latest", None)),
        (
            "library://sylabs/examples/lolcow",
            ("library", SYLABS_LIBRARY, "sylabs/examples/lolcow", "latest", None),
        ),
        ("library://h.example.org/e/c/i:2", ("library", "h.example.org", "e/c/i", "2", None)),
        ("oras://ghcr.io/o/i:v1", ("oras", "ghcr.io", "o/i", "v1", None)),
        ("oras://alpine", ("oras", DOCKER_HUB, "library/alpine", "latest", None)),
        ("shub://vsoch/hello-world", ("shub", SINGULARITY_HUB, "vsoch/hello-world", "latest", None)),
        ("https://example.org/a/x.sif", ("https", None, "example.org/a/x.sif", None, None)),
        ("file:///abs/x.sif", ("file", None, "/abs/x.sif", None, None)),
    ],
)
def test_fields(tag: str, fields: tuple[object, ...]) -> None:
    ref = parse_reference(tag)
    assert (ref.scheme, ref.registry, ref.repository, ref.tag, ref.digest) == fields


def test_relative_paths_resolve_against_the_current_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_reference("./rel.sif").repository == str(tmp_path / "rel.sif")
    assert parse_reference("../up.sif").repository == str(tmp_path.parent / "up.sif")
    assert parse_reference("file:rel.sif").repository == str(tmp_path / "rel.sif")
    ref = parse_reference("./dir/../x.sif")
    assert ref == Reference("file", None, str(tmp_path / "x.sif"))
    assert ref.canonical() == str(tmp_path / "x.sif")


# ---------------------------------------------------------------------------
# skopeo's transports
# ---------------------------------------------------------------------------

BUSYBOX = "docker.io/library/busybox:latest"

# (tag, (scheme, registry, repository, tag, digest), canonical)
TRANSPORTS = [
    (
        "docker-archive:/abs/x.tar",
        ("docker-archive", None, "/abs/x.tar", None, None),
        "docker-archive:/abs/x.tar",
    ),
    (
        "docker-archive:/abs/x.tar.gz:busybox",
        ("docker-archive", None, "/abs/x.tar.gz", BUSYBOX, None),
        f"docker-archive:/abs/x.tar.gz:{BUSYBOX}",
    ),
    (
        "docker-archive:/abs/x.tar:index.docker.io/busybox:1.36",
        ("docker-archive", None, "/abs/x.tar", "docker.io/library/busybox:1.36", None),
        "docker-archive:/abs/x.tar:docker.io/library/busybox:1.36",
    ),
    (
        "docker-archive:/abs/x.tar:localhost:5000/ns/img:1",
        ("docker-archive", None, "/abs/x.tar", "localhost:5000/ns/img:1", None),
        "docker-archive:/abs/x.tar:localhost:5000/ns/img:1",
    ),
    (
        "docker-archive:/abs/./a/../x.tar:quay.io/b/s:1.15--h1170115_1",
        ("docker-archive", None, "/abs/x.tar", "quay.io/b/s:1.15--h1170115_1", None),
        "docker-archive:/abs/x.tar:quay.io/b/s:1.15--h1170115_1",
    ),
    ("oci:/abs/layout", ("oci", None, "/abs/layout", None, None), "oci:/abs/layout"),
    ("oci:/abs/layout/", ("oci", None, "/abs/layout", None, None), "oci:/abs/layout"),
    ("oci:/abs/layout:v1.0", ("oci", None, "/abs/layout", "v1.0", None), "oci:/abs/layout:v1.0"),
    # a ref.name may itself hold ':' and '@' (and upper case): only the first ':' ends the path
    (f"oci:/abs/layout:{BUSYBOX}", ("oci", None, "/abs/layout", BUSYBOX, None), f"oci:/abs/layout:{BUSYBOX}"),
    (
        f"oci:/abs/layout:Name@{SHA256}",
        ("oci", None, "/abs/layout", f"Name@{SHA256}", None),
        f"oci:/abs/layout:Name@{SHA256}",
    ),
    ("oci:/with space/l:r", ("oci", None, "/with space/l", "r", None), "oci:/with space/l:r"),
    ("oci-archive:/abs/o.tar", ("oci-archive", None, "/abs/o.tar", None, None), "oci-archive:/abs/o.tar"),
    (
        "oci-archive:/abs/o.tar:latest",
        ("oci-archive", None, "/abs/o.tar", "latest", None),
        "oci-archive:/abs/o.tar:latest",
    ),
    # transport names are read case-insensitively, like every other scheme
    ("OCI:/abs/layout", ("oci", None, "/abs/layout", None, None), "oci:/abs/layout"),
    (
        "docker-daemon:busybox",
        ("docker-daemon", DOCKER_HUB, "library/busybox", "latest", None),
        f"docker-daemon:{BUSYBOX}",
    ),
    (
        "docker-daemon:index.docker.io/busybox:1.36",
        ("docker-daemon", DOCKER_HUB, "library/busybox", "1.36", None),
        "docker-daemon:docker.io/library/busybox:1.36",
    ),
    (
        f"docker-daemon:busybox@{SHA256}",
        ("docker-daemon", DOCKER_HUB, "library/busybox", None, SHA256),
        f"docker-daemon:docker.io/library/busybox@{SHA256}",
    ),
    (
        "docker-daemon:localhost:5000/ns/img:1",
        ("docker-daemon", "localhost:5000", "ns/img", "1", None),
        "docker-daemon:localhost:5000/ns/img:1",
    ),
    (
        "docker-daemon:docker:24-dind",
        ("docker-daemon", DOCKER_HUB, "library/docker", "24-dind", None),
        "docker-daemon:docker.io/library/docker:24-dind",
    ),
]


@pytest.mark.parametrize(("tag", "fields", "canonical"), TRANSPORTS)
def test_transports(tag: str, fields: tuple[object, ...], canonical: str) -> None:
    ref = parse_reference(tag)
    assert (ref.scheme, ref.registry, ref.repository, ref.tag, ref.digest) == fields
    assert ref.canonical() == str(ref) == format_reference(ref) == canonical
    assert parse_reference(canonical) == ref
    assert Reference(*fields) == ref  # type: ignore[arg-type]
    assert ref.is_transport
    assert not ref.is_registry
    assert ref.is_local == (ref.scheme != "docker-daemon")
    # Default registries are for tags that name none; an archive, a layout or
    # the engine names its images by Docker's defaults.
    assert (
        parse_reference(tag, container_type=ContainerType.Docker, registries={ContainerType.Docker: "q.io"})
        == ref
    )


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        # the existing special cases survive: a port after the scheme name is a registry host
        ("oci:5000/img", "oci:5000/img:latest"),
        ("oci-archive:5000/ns/img:1", "oci-archive:5000/ns/img:1"),
        ("docker-archive:5000/img", "docker-archive:5000/img:latest"),
        ("docker-daemon:5000/img", "docker-daemon:5000/img:latest"),
        ("oci:5000", "docker.io/library/oci:5000"),
        ("docker:24-dind", "docker.io/library/docker:24-dind"),
        ("docker:5000/img", "docker:5000/img:latest"),
        # without the ':' they are plain Docker Hub names; after docker:// too
        ("oci", "docker.io/library/oci:latest"),
        ("docker-archive", "docker.io/library/docker-archive:latest"),
        ("docker-daemon:1.0", "docker-daemon:docker.io/library/1.0:latest"),
        ("docker://docker-archive:x.tar", "docker.io/library/docker-archive:x.tar"),
        ("oci.example.org/x", "oci.example.org/x:latest"),
        ("docker-archive.example.org:5000/x", "docker-archive.example.org:5000/x:latest"),
    ],
)
def test_transport_names_do_not_swallow_docker_names(tag: str, expected: str) -> None:
    ref = parse_reference(tag)
    assert ref.canonical() == expected
    assert parse_reference(expected) == ref


def test_transport_paths_resolve_against_the_current_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_reference("oci:layout").repository == str(tmp_path / "layout")
    assert parse_reference("oci:./layout:v1") == Reference("oci", None, str(tmp_path / "layout"), "v1")
    assert parse_reference("oci:.").repository == str(tmp_path)
    assert parse_reference("oci-archive:../o.tar").repository == str(tmp_path.parent / "o.tar")
    ref = parse_reference("docker-archive:d/../x.tar:busybox")
    assert ref.canonical() == f"docker-archive:{tmp_path / 'x.tar'}:{BUSYBOX}"
    assert ref.path == tmp_path / "x.tar"
    # 'oci:5000' is Docker Hub's image; this is how to name a directory called 5000
    assert parse_reference("oci:./5000").repository == str(tmp_path / "5000")


MALFORMED_TRANSPORTS = [
    ("oci:", "names no path after 'oci:'"),
    ("oci::ref", "names no path after 'oci:'"),
    ("oci-archive:", "names no path after 'oci-archive:'"),
    ("docker-archive:", "names no path after 'docker-archive:'"),
    ("docker-archive::busybox", "names no path"),
    ("oci:/abs/layout:", "empty image reference"),
    ("docker-archive:/abs/x.tar:", "empty image reference"),
    ("oci:/abs/layout:a b", "whitespace"),
    ("oci-archive:/abs/o.tar:v1\t", "whitespace or a control character"),
    ("oci:/abs/layout:v1\x00", "control character"),
    ("oci:/abs/lay\nout", "control character"),
    ("docker-archive:x.tar:NOT A REF", "whitespace"),
    ("docker-archive:x.tar:NOTAREF", "repository names must be lowercase"),
    ("docker-archive:x.tar:busybox:-x", "tag '-x' is not valid"),
    (f"docker-archive:x.tar:busybox@{SHA256}", "by tag only"),
    (f"docker-archive:x.tar:busybox:1@{SHA256}", "by tag only"),
    ("oci:/", "root directory"),
    ("oci://host/path", "not a URL scheme"),
    ("docker-archive:///abs/x.tar", "not a URL scheme"),
    ("docker-daemon://busybox", "not a URL scheme"),
    ("docker-daemon:", "names no image after 'docker-daemon:'"),
    ("docker-daemon:Busybox", "repository names must be lowercase"),
    ("docker-daemon:busybox:", "empty tag"),
    ("docker-daemon:busy box", "whitespace"),
    (f"docker-daemon:{SHA256}", "image ID"),
    ("docker-daemon:" + "0123456789abcdef" * 4, "image ID"),
]


@pytest.mark.parametrize(("tag", "reason"), MALFORMED_TRANSPORTS)
def test_malformed_transports_are_rejected_quoting_the_tag(tag: str, reason: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference(tag)
    message = str(info.value)
    assert quote(tag) in message
    assert reason in message


def test_a_path_with_a_colon_cannot_be_a_transport_path(tmp_path, monkeypatch) -> None:
    # containers/image's rule: the path ends at the first ':', so it cannot hold one
    ref = parse_reference("oci:/abs/a:b/c")
    assert (ref.repository, ref.tag) == ("/abs/a", "b/c")
    with pytest.raises(InvalidReferenceError, match="contains ':'"):
        Reference("oci", None, "/abs/a:b")
    colon_dir = tmp_path / "a:b"
    colon_dir.mkdir()
    monkeypatch.chdir(colon_dir)
    with pytest.raises(InvalidReferenceError, match=r"'oci:layout'.*contains ':'"):
        parse_reference("oci:layout")


@pytest.mark.parametrize(
    "fields",
    [
        ("oci", "quay.io", "/abs/layout", None, None),
        ("oci", None, "/abs/layout", None, SHA256),
        ("oci", None, "layout", None, None),
        ("oci", None, "/abs/layout", "", None),
        ("oci", None, "/abs/layout", "a b", None),
        ("docker-archive", None, "/abs/x.tar", "NOTAREF", None),
        ("docker-archive", None, "/abs/x.tar", f"busybox@{SHA256}", None),
        ("docker-daemon", None, "busybox", None, None),
        ("docker-daemon", "quay.io", "Busybox", None, None),
    ],
)
def test_invalid_hand_built_transport_references_are_rejected(fields: tuple[object, ...]) -> None:
    with pytest.raises(InvalidReferenceError, match="invalid container reference"):
        Reference(*fields)  # type: ignore[arg-type]


def test_hand_built_transport_references_are_normalised() -> None:
    archive = Reference("docker-archive", None, "/abs/./x.tar", "index.docker.io/busybox")
    assert archive.tag == BUSYBOX
    assert archive == parse_reference("docker-archive:/abs/x.tar:busybox")
    daemon = Reference("docker-daemon", "Index.Docker.IO", "busybox")
    assert daemon == parse_reference("docker-daemon:busybox")


def test_transport_properties_and_methods() -> None:
    archive = parse_reference("docker-archive:/abs/x.tar:busybox:1.36")
    assert archive.transport_ref == "docker.io/library/busybox:1.36"
    assert archive.path == Path("/abs/x.tar")
    assert archive.name == "/abs/x.tar"
    layout = parse_reference("oci:/abs/layout")
    assert layout.transport_ref is None
    assert layout.path == Path("/abs/layout")
    assert parse_reference("oci-archive:/abs/o.tar:v1").transport_ref == "v1"
    daemon = parse_reference("docker-daemon:busybox")
    assert daemon.transport_ref == BUSYBOX
    assert daemon.name == "docker.io/library/busybox"
    assert not daemon.is_local
    pinned_daemon = parse_reference(f"docker-daemon:busybox@{SHA256}")
    assert pinned_daemon.transport_ref == f"docker.io/library/busybox@{SHA256}"
    assert pinned_daemon.pinned() == f"docker-daemon:docker.io/library/busybox@{SHA256}"
    for ref in (archive, layout, daemon):
        with pytest.raises(InvalidReferenceError, match="no host to talk to"):
            _ = ref.api_host
        with pytest.raises(InvalidReferenceError, match="comes from no registry"):
            ref.with_digest(SHA256)
    with pytest.raises(InvalidReferenceError, match="not pinned"):
        layout.pinned()
    with pytest.raises(InvalidReferenceError, match="has no path"):
        _ = daemon.path
    with pytest.raises(InvalidReferenceError, match="has no path"):
        _ = parse_reference("busybox").path


def test_files_and_registries_are_not_transports() -> None:
    local = parse_reference("/abs/x.sif")
    assert local.is_local and not local.is_transport
    assert local.path == Path("/abs/x.sif")
    assert local.transport_ref is None
    for tag in ("busybox", "library://alpine", "oras://ghcr.io/o/i", "https://example.org/x.sif"):
        ref = parse_reference(tag)
        assert not ref.is_local
        assert not ref.is_transport
        assert ref.transport_ref is None


def test_nextflow_file_names_for_transports() -> None:
    layout = nextflow_file_name("oci:/data/a/layout:v1")
    assert re.fullmatch(r"oci-layout-[0-9a-f]{12}", layout)
    # the image named inside is part of the identity
    assert layout != nextflow_file_name("oci:/data/a/layout:v2")
    assert layout != nextflow_file_name("oci:/data/a/layout")
    assert layout != nextflow_file_name("oci:/data/b/layout:v1")
    assert layout != nextflow_file_name("oci-archive:/data/a/layout:v1")
    archive = nextflow_file_name("docker-archive:/data/x.tar.gz:busybox")
    assert re.fullmatch(r"docker-archive-x\.tar\.gz-[0-9a-f]{12}", archive)
    assert archive == nextflow_file_name(f"docker-archive:/data/x.tar.gz:{BUSYBOX}")
    assert archive != nextflow_file_name("file:///data/x.tar.gz")
    assert nextflow_file_name("oci-archive:/data/o.tar").startswith("oci-archive-o.tar-")
    assert nextflow_file_name("docker-daemon:busybox") == "docker-daemon-docker.io-library-busybox-latest"
    assert nextflow_file_name("docker-daemon:busybox") != nextflow_file_name("busybox")
    assert (
        nextflow_file_name(f"docker-daemon:localhost:5000/a/b@{SHA256}")
        == f"docker-daemon-localhost-5000-a-b-sha256-{SHA256[7:]}"
    )


# ---------------------------------------------------------------------------
# Malformed tags
# ---------------------------------------------------------------------------

MALFORMED = [
    ("Ubuntu:latest", "repository names must be lowercase"),
    ("biocontainers/SAMtools:1.15", "repository names must be lowercase"),
    ("", "empty"),
    (":latest", "names no repository"),
    ("@" + SHA256, "names no repository"),
    ("busybox:", "empty tag"),
    ("busybox@", "empty digest"),
    ("busybox@sha256:abc", "64 hex digits"),
    ("busybox@sha256:" + "XYZ" * 21 + "X", "not hexadecimal"),
    ("busybox@sha256:" + "ABCDEF0123456789" * 4, "lowercase"),
    ("busybox@sha512:" + "ab" * 32, "128 hex digits"),
    ("busybox@md5:d41d8cd98f00b204e9800998ecf8427e", "'md5' is not supported"),
    ("busybox@sha256", "<algorithm>:<hex>"),
    (f"busybox@{SHA256}@{SHA256_B}", "more than one '@'"),
    ("quay.io/biocontainers/", "ends with '/'"),
    ("quay.io//samtools", "empty component"),
    ("biocontainers//samtools", "empty component"),
    ("busy box", "whitespace"),
    (" busybox", "whitespace"),
    ("busybox:1.0\n", "control character"),
    ("busybox:" + "a" * 129, "limit is 128"),
    ("busybox:-dev", "tag '-dev' is not valid"),
    ("busybox:.hidden", "tag '.hidden' is not valid"),
    ("busybox:a+b", "tag 'a+b' is not valid"),
    ("-busybox", "'-busybox' is not valid"),
    ("busybox-", "'busybox-' is not valid"),
    ("foo__-bar", "is not valid"),
    ("foo$bar", "is not valid"),
    ("a/" + "b" * 255, "limit is 255"),
    ("0123456789abcdef" * 4, "image ID"),
    ("quay.io:99999/x", "outside 1-65535"),
    ("[::zz]:5000/x", "not a valid host"),
    ("[1::2::3]:5000/x", "not a valid IPv6 address"),
    ("quay..io/x", "not a valid host"),
    ("docker://", "names no image"),
    ("ftp://example.org/x.sif", "'ftp' is not supported"),
    ("library:sylabs/examples/lolcow", "must start with 'library://'"),
    ("oras:ghcr.io/x", "must start with 'oras://'"),
    ("library://a/b/c/d/e", "[host/]entity/collection/container"),
    ("library:///a/b/c/d", "[host/]entity/collection/container"),
    ("https://user:secret@example.org/x.sif", "credentials"),
    ("https://example.org/", "names no file"),
    ("https://example.org", "names no file"),
    ("https://example.org/x.sif#frag", "fragment"),
    ("https:///x.sif", "names no host"),
    ("file://server/share/x.sif", "must be empty"),
    ("file:///x.sif?q=1", "query"),
    ("/", "root directory"),
    ("/abs/x\x00.sif", "control character"),
    ("image.sif", "looks like an image file"),
    ("secret/image.sif", "'./secret/image.sif'"),
    ("quay.io/org/saved.tar.gz", "'docker://quay.io/org/saved.tar.gz'"),
    ("busybox:" + "a" * 5000, "5008 characters long"),
]


@pytest.mark.parametrize(("tag", "reason"), MALFORMED)
def test_malformed_tags_are_rejected_with_a_useful_message(tag: str, reason: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference(tag)
    message = str(info.value)
    if reason == "credentials":  # the tag is quoted with its password masked: messages reach logs
        assert "'https://***@example.org/x.sif'" in message and "secret" not in message
    else:
        assert quote(tag) in message
    assert reason in message
    # Callers that only know the reference's root exception still catch it.
    assert isinstance(info.value, ContainerFactoryException)
    assert isinstance(info.value, ValueError)


def test_malformed_table_is_big_enough() -> None:
    assert len(MALFORMED) >= 12


def test_non_string_tags_are_rejected() -> None:
    with pytest.raises(InvalidReferenceError, match="expected a string"):
        parse_reference(None)  # type: ignore[arg-type]


def test_message_example_from_the_design() -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference("Ubuntu:latest")
    assert str(info.value) == "invalid container tag 'Ubuntu:latest': repository names must be lowercase"


@pytest.mark.parametrize(
    "fields",
    [
        ("ftp", None, "x", None, None),
        ("docker", None, "busybox", None, None),
        ("docker", "myregistry", "busybox", None, None),
        ("docker", "quay.io", "Busybox", None, None),
        ("docker", "quay.io", "busybox", "-x", None),
        ("docker", "quay.io", "busybox", None, "sha256:1"),
        ("library", "h.example.org", "c/i", None, None),
        ("library", SYLABS_LIBRARY, "a/b/c/d", None, None),
        ("https", "example.org", "example.org/x.sif", None, None),
        ("https", None, "example.org/x.sif", "1", None),
        ("file", None, "relative/x.sif", None, None),
        ("file", None, "/x.sif", None, SHA256),
    ],
)
def test_invalid_hand_built_references_are_rejected(fields: tuple[object, ...]) -> None:
    with pytest.raises(InvalidReferenceError, match="invalid container reference"):
        Reference(*fields)  # type: ignore[arg-type]


def test_hand_built_references_are_normalised() -> None:
    ref = Reference("docker", "Index.Docker.IO", "busybox")
    assert ref == parse_reference("busybox")
    assert ref.registry == "docker.io"
    assert ref.repository == "library/busybox"
    assert ref.tag == "latest"
    assert Reference("file", None, "/a/./b/../x.sif").repository == "/a/x.sif"
    assert Reference("https", None, "Example.org:443/x.sif").repository == "example.org/x.sif"
    assert Reference("docker", "[0::1]:05000", "x").registry == "[::1]:5000"


# ---------------------------------------------------------------------------
# Properties and methods
# ---------------------------------------------------------------------------


def test_name_pinned_with_digest_and_api_host() -> None:
    ref = parse_reference("busybox:1.36")
    assert ref.name == "docker.io/library/busybox"
    assert ref.api_host == "registry-1.docker.io"
    assert ref.is_registry
    with pytest.raises(InvalidReferenceError, match="not pinned"):
        ref.pinned()
    pinned = ref.with_digest(SHA256)
    assert pinned.tag == "1.36"
    assert pinned.canonical() == f"docker.io/library/busybox:1.36@{SHA256}"
    assert pinned.pinned() == f"docker.io/library/busybox@{SHA256}"
    assert parse_reference(pinned.pinned()) == dataclasses.replace(pinned, tag=None)
    with pytest.raises(InvalidReferenceError, match="64 hex digits"):
        ref.with_digest("sha256:abc")

    quay = parse_reference("quay.io/biocontainers/samtools:1.15--h1170115_1")
    assert quay.api_host == "quay.io"
    assert quay.name == "quay.io/biocontainers/samtools"

    port = parse_reference("localhost:5000/ns/img:tag").with_digest(SHA256)
    assert port.canonical() == f"localhost:5000/ns/img:tag@{SHA256}"
    assert port.api_host == "localhost:5000"


def test_other_schemes_methods() -> None:
    lib = parse_reference("library://sylabs/examples/lolcow").with_digest(SHA256)
    assert lib.api_host == "library.sylabs.io"
    assert lib.pinned() == f"library://sylabs/examples/lolcow@{SHA256}"
    assert parse_reference(lib.pinned()).digest == SHA256
    assert lib.name == "cloud.sylabs.io/sylabs/examples/lolcow"

    oras = parse_reference("oras://ghcr.io/o/i:v1").with_digest(SHA256)
    assert oras.pinned() == f"oras://ghcr.io/o/i@{SHA256}"
    assert parse_reference("oras://busybox").api_host == "registry-1.docker.io"

    url = parse_reference("https://example.org:8443/images/x.sif")
    assert not url.is_registry
    assert url.registry is None and url.tag is None and url.digest is None
    assert url.name == url.canonical() == "https://example.org:8443/images/x.sif"
    assert url.api_host == "example.org:8443"
    with pytest.raises(InvalidReferenceError, match="only registry images"):
        url.with_digest(SHA256)

    local = parse_reference("/abs/x.sif")
    assert local.name == "/abs/x.sif"
    with pytest.raises(InvalidReferenceError, match="no host"):
        _ = local.api_host
    with pytest.raises(InvalidReferenceError, match="not pinned"):
        local.pinned()


def test_references_are_hashable_values() -> None:
    spellings = ["busybox", "docker://busybox:latest", "index.docker.io/library/busybox", "docker.io/busybox"]
    assert len({parse_reference(t) for t in spellings}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_reference("busybox").tag = "1"  # type: ignore[misc]


def test_container_model_decomposes_transports() -> None:
    def decompose(tag: str) -> tuple[str | None, str, str | None]:
        return Container(
            origTaggedName=tag, type=ContainerType.Docker, taggedName=tag
        ).decompose_docker_tagged_name

    assert decompose("docker-daemon:localhost:5000/foo/bar:1") == ("localhost:5000", "foo/bar", "1")
    assert decompose("docker-archive:/abs/x.tar:busybox:1.36") == ("docker.io", "library/busybox", "1.36")
    assert decompose("docker-archive:/abs/x.tar") == (None, "docker-archive:/abs/x.tar", None)
    assert decompose("oci:/abs/layout:v1") == (None, "oci:/abs/layout:v1", None)


def test_container_model_decomposes_through_the_parser() -> None:
    container = Container(
        origTaggedName="localhost:5000/foo/bar:1",
        type=ContainerType.Docker,
        taggedName="localhost:5000/foo/bar:1",
    )
    assert container.decompose_docker_tagged_name == ("localhost:5000", "foo/bar", "1")
    pinned = Container(origTaggedName=f"busybox@{SHA256}", type=ContainerType.Podman)
    assert pinned.decompose_docker_tagged_name == ("docker.io", "library/busybox", "latest")


# ---------------------------------------------------------------------------
# Per-type default registries
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "container_type", "registries", "expected"),
    [
        ("samtools:1.15", None, {ContainerType.Docker: "quay.io"}, "quay.io/samtools:1.15"),
        ("samtools:1.15", ContainerType.Docker, {ContainerType.Docker: "quay.io"}, "quay.io/samtools:1.15"),
        (
            "biocontainers/samtools:1.15--h1170115_1",
            ContainerType.Docker,
            {ContainerType.Docker: "quay.io"},
            "quay.io/biocontainers/samtools:1.15--h1170115_1",
        ),
        ("samtools:1.15", ContainerType.Podman, {ContainerType.Docker: "quay.io"}, "quay.io/samtools:1.15"),
        ("samtools:1.15", ContainerType.Podman, {ContainerType.Podman: "ghcr.io"}, "ghcr.io/samtools:1.15"),
        ("samtools", ContainerType.Singularity, {ContainerType.Docker: "quay.io"}, "quay.io/samtools:latest"),
        (
            "docker://samtools",
            ContainerType.Singularity,
            {ContainerType.Docker: "quay.io"},
            "quay.io/samtools:latest",
        ),
        (
            "samtools",
            ContainerType.Singularity,
            {ContainerType.Singularity: "ghcr.io", ContainerType.Docker: "quay.io"},
            "ghcr.io/samtools:latest",
        ),
        (
            "samtools",
            ContainerType.Apptainer,
            {ContainerType.Singularity: "ghcr.io"},
            "ghcr.io/samtools:latest",
        ),
        (
            "oras://sif/samtools:1",
            ContainerType.Singularity,
            {ContainerType.Singularity: "ghcr.io"},
            "oras://ghcr.io/sif/samtools:1",
        ),
        # a registry named in the tag always wins
        (
            "docker.io/busybox",
            ContainerType.Docker,
            {ContainerType.Docker: "quay.io"},
            "docker.io/library/busybox:latest",
        ),
        ("ghcr.io/o/i:1", ContainerType.Docker, {ContainerType.Docker: "quay.io"}, "ghcr.io/o/i:1"),
        # an entry for another type does not leak
        (
            "busybox",
            ContainerType.Docker,
            {ContainerType.Podman: "quay.io"},
            "docker.io/library/busybox:latest",
        ),
        ("busybox", ContainerType.Docker, {}, "docker.io/library/busybox:latest"),
        ("busybox", ContainerType.Docker, None, "docker.io/library/busybox:latest"),
        # Docker Hub named as a default still gets its library/ namespace
        (
            "busybox",
            ContainerType.Docker,
            {ContainerType.Docker: "index.docker.io"},
            "docker.io/library/busybox:latest",
        ),
        # what people paste as "the registry"
        (
            "busybox",
            ContainerType.Docker,
            {ContainerType.Docker: "https://Registry.Example.org:5000/"},
            "registry.example.org:5000/busybox:latest",
        ),
        # library:// and shub:// have their own endpoints
        (
            "library://sylabs/examples/lolcow",
            ContainerType.Singularity,
            {ContainerType.Singularity: "ghcr.io", ContainerType.Docker: "quay.io"},
            "library://sylabs/examples/lolcow:latest",
        ),
        (
            "shub://vsoch/hello-world",
            ContainerType.Singularity,
            {ContainerType.Docker: "quay.io"},
            "shub://singularity-hub.org/vsoch/hello-world:latest",
        ),
    ],
)
def test_default_registries(
    tag: str,
    container_type: ContainerType | None,
    registries: dict[ContainerType, str] | None,
    expected: str,
) -> None:
    ref = parse_reference(tag, container_type=container_type, registries=registries)
    assert ref.canonical() == expected
    # The canonical form names its registry, so it needs no defaults to read back.
    assert parse_reference(ref.canonical()) == ref


def test_non_docker_hub_defaults_get_no_library_namespace() -> None:
    ref = parse_reference("samtools:1.15", registries={ContainerType.Docker: "quay.io"})
    assert (ref.registry, ref.repository, ref.tag) == ("quay.io", "samtools", "1.15")


@pytest.mark.parametrize(
    ("registry", "reason"),
    [
        ("quay.io/biocontainers", "without a path"),
        ("myregistry", "Docker Hub namespace"),
        ("bad host", "not a valid"),
    ],
)
def test_unusable_default_registries_are_reported(registry: str, reason: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference("samtools:1.15", registries={ContainerType.Docker: registry})
    message = str(info.value)
    assert "'samtools:1.15'" in message
    assert "default registry for Docker" in message
    assert reason in message


# ---------------------------------------------------------------------------
# nextflow_file_name
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        (
            "quay.io/biocontainers/samtools:1.15--h1170115_1",
            "quay.io-biocontainers-samtools-1.15--h1170115_1",
        ),
        ("docker.io/library/busybox:latest", "docker.io-library-busybox-latest"),
        ("busybox", "docker.io-library-busybox-latest"),
        ("localhost:5000/foo/bar:1", "localhost-5000-foo-bar-1"),
        (f"busybox@{SHA256}", f"docker.io-library-busybox-sha256-{SHA256[7:]}"),
        (f"busybox:1.36@{SHA256}", f"docker.io-library-busybox-1.36-sha256-{SHA256[7:]}"),
        ("[::1]:5000/busybox:1.36", "_--1_-5000-busybox-1.36"),
        ("library://sylabs/examples/lolcow:1.0", "library-cloud.sylabs.io-sylabs-examples-lolcow-1.0"),
        ("oras://ghcr.io/o/img:v1", "oras-ghcr.io-o-img-v1"),
        ("shub://vsoch/hello-world", "shub-singularity-hub.org-vsoch-hello-world-latest"),
    ],
)
def test_nextflow_file_name_examples(tag: str, expected: str) -> None:
    assert nextflow_file_name(tag) == expected
    assert nextflow_file_name(parse_reference(tag)) == expected


def test_nextflow_file_name_for_files_and_urls() -> None:
    a = nextflow_file_name("/data/a/x.sif")
    b = nextflow_file_name("/data/b/x.sif")
    assert re.fullmatch(r"file-x\.sif-[0-9a-f]{12}", a)
    assert a != b
    assert nextflow_file_name("file:///data/a/x.sif") == a
    hidden = nextflow_file_name("/data/.hidden.sif")
    assert hidden.startswith("file-.hidden.sif-")
    url = nextflow_file_name("https://sif.example.org/singularity/samtools:1.15--h1170115_1")
    assert re.fullmatch(r"https-samtools_1\.15--h1170115_1-[0-9a-f]{12}", url)
    assert nextflow_file_name("https://example.org/dl?id=1") != nextflow_file_name(
        "https://example.org/dl?id=2"
    )
    assert nextflow_file_name("https://example.org/images/").startswith("https-images-")


def test_nextflow_file_name_caps_long_names() -> None:
    long = "registry.example.org/" + "/".join(["c" * 40] * 5) + ":" + "t" * 128 + "@" + SHA512
    name = nextflow_file_name(long)
    assert len(name) == 200
    assert name != nextflow_file_name(long.replace("t" * 128, "t" * 127 + "u"))


# ---------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------

ALNUM = string.ascii_lowercase + string.digits
TAG_FIRST = string.ascii_letters + string.digits + "_"
DOCKER_HUB_SPELLINGS = ["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"]

alnum_runs = st.text(ALNUM, min_size=1, max_size=6)
separators = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def path_components(draw: st.DrawFn) -> str:
    head = draw(alnum_runs)
    tail = draw(st.lists(st.tuples(separators, alnum_runs), max_size=2))
    return head + "".join(sep + run for sep, run in tail)


repositories = st.lists(path_components(), min_size=1, max_size=4).map("/".join)
domain_labels = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
bare_hosts = st.one_of(
    st.lists(domain_labels, min_size=2, max_size=4).map(".".join),
    st.sampled_from(["localhost", "LocalHost", *DOCKER_HUB_SPELLINGS]),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).flatmap(lambda a: st.sampled_from([f"[{a.compressed}]", f"[{a.exploded.upper()}]"])),
)
hosts = st.tuples(bare_hosts, st.none() | st.integers(1, 65535)).map(
    lambda hp: hp[0] if hp[1] is None else f"{hp[0]}:{hp[1]}"
)
tags = st.tuples(st.text(TAG_FIRST, min_size=1, max_size=1), st.text(TAG_FIRST + ".-", max_size=127)).map(
    "".join
)
digests = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda b: f"sha256:{b.hex()}"),
    st.binary(min_size=64, max_size=64).map(lambda b: f"sha512:{b.hex()}"),
)


@st.composite
def registry_references(
    draw: st.DrawFn, schemes: tuple[str, ...] = ("docker", "oras", "shub", "library")
) -> Reference:
    scheme = draw(st.sampled_from(schemes))
    tag = draw(st.none() | tags)
    digest = draw(st.none() | digests)
    if scheme == "library":
        count = draw(st.integers(1, 3))
        repository = "/".join(draw(st.lists(path_components(), min_size=count, max_size=count)))
        registry = draw(hosts) if count == 3 and draw(st.booleans()) else SYLABS_LIBRARY
    else:
        repository = draw(repositories)
        registry = draw(hosts)
    return Reference(scheme, registry, repository, tag, digest)


url_chars = string.ascii_letters + string.digits + "-._~%:=+,;!$&'()*@"
url_references = st.builds(
    lambda scheme, host, segments, query: Reference(
        scheme, None, host + "/" + "/".join(segments) + ("" if query is None else "?" + query)
    ),
    st.sampled_from(["http", "https"]),
    hosts,
    st.lists(st.text(url_chars, min_size=1, max_size=12), min_size=1, max_size=4),
    st.none() | st.text(url_chars + "/?", max_size=20),
)
path_segment = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), exclude_characters="/")
    | st.just(" "),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))
file_references = st.lists(path_segment, min_size=1, max_size=5).map(
    lambda segments: Reference("file", None, "/" + "/".join(segments))
)
transport_paths = st.lists(path_segment.filter(lambda s: ":" not in s), min_size=1, max_size=5).map(
    lambda segments: "/" + "/".join(segments)
)
# what a layout's ref.name may hold: anything printable but whitespace
oci_refs = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1, max_size=30
)
docker_archive_refs = registry_references(schemes=("docker",)).map(
    lambda ref: dataclasses.replace(ref, digest=None, tag=ref.tag or "latest").canonical()
)
path_transport_references = st.one_of(
    st.builds(
        lambda scheme, path, ref: Reference(scheme, None, path, ref),
        st.sampled_from(["oci", "oci-archive"]),
        transport_paths,
        st.none() | oci_refs,
    ),
    st.builds(
        lambda path, ref: Reference("docker-archive", None, path, ref),
        transport_paths,
        st.none() | docker_archive_refs,
    ),
)
references = st.one_of(
    registry_references(),
    url_references,
    file_references,
    path_transport_references,
    registry_references(schemes=("docker-daemon",)),
)


@settings(max_examples=500)
@given(references)
@example(Reference("docker", "docker.io", "busybox"))
@example(Reference("docker", "docker.io", "a.b/c"))
@example(Reference("docker", "localhost", "x", digest=SHA256))
@example(Reference("library", "h.example.org", "e/c/i", "sha256.abc"))
@example(Reference("https", None, "example.org/singularity/samtools:1.15--h1170115_1"))
@example(Reference("file", None, "/tmp/with space/x@y:z#w?.sif"))
@example(Reference("oci", None, "/tmp/with space/l", "a:b@c/d"))
@example(Reference("oci-archive", None, "/5000/img", "//x"))
@example(Reference("docker-archive", None, "/x.tar", "busybox"))
@example(Reference("docker-daemon", "oci:5000", "img"))
@example(Reference("docker", "docker-archive:5000", "img"))
def test_format_then_parse_round_trips(ref: Reference) -> None:
    text = format_reference(ref)
    assert parse_reference(text) == ref
    # Defaults must not matter once the registry is spelled out.
    assert (
        parse_reference(text, container_type=ContainerType.Docker, registries={ContainerType.Docker: "q.io"})
        == ref
    )
    canonical = ref.canonical()
    assert parse_reference(canonical).canonical() == canonical


@st.composite
def docker_spellings(draw: st.DrawFn) -> tuple[str, Reference]:
    """Another way a workflow may write the same Docker reference."""
    ref = draw(registry_references(schemes=("docker",)))
    assert ref.registry is not None
    repository = ref.repository
    first = repository.split("/", 1)[0]
    if ref.registry == DOCKER_HUB:
        choices = [*DOCKER_HUB_SPELLINGS, "Docker.IO"]
        if "." not in first and first != "localhost":
            choices.append("")  # only when the path can't be mistaken for a host
        host = draw(st.sampled_from(choices))
        if repository.startswith("library/") and repository.count("/") == 1 and draw(st.booleans()):
            repository = repository.removeprefix("library/")
    else:
        host = draw(st.sampled_from([ref.registry, ref.registry.upper()]))
    text = f"{host}/{repository}" if host else repository
    if ref.tag is not None and not (ref.tag == "latest" and ref.digest is None and draw(st.booleans())):
        text += f":{ref.tag}"
    if ref.digest is not None:
        text += f"@{ref.digest}"
    prefix = draw(st.sampled_from(["", "docker://", "docker:/", "docker:///", "DOCKER://"]))
    return prefix + text, ref


@settings(max_examples=300)
@given(docker_spellings())
def test_every_spelling_parses_to_the_same_reference(spelling: tuple[str, Reference]) -> None:
    text, ref = spelling
    parsed = parse_reference(text)
    assert parsed == ref
    assert parse_reference(parsed.canonical()).canonical() == parsed.canonical()


SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")


@settings(max_examples=300)
@given(references)
def test_nextflow_file_names_are_safe(ref: Reference) -> None:
    name = nextflow_file_name(ref)
    assert name
    assert "/" not in name
    assert not name.startswith((".", "-"))
    assert SAFE_NAME.fullmatch(name)
    assert len(name) <= 200
    assert nextflow_file_name(ref.canonical()) == name


@given(registry_references(), tags, tags)
def test_nextflow_file_names_tell_tags_apart(ref: Reference, tag_a: str, tag_b: str) -> None:
    a = dataclasses.replace(ref, tag=tag_a, digest=None)
    b = dataclasses.replace(ref, tag=tag_b, digest=None)
    assert (nextflow_file_name(a) == nextflow_file_name(b)) == (tag_a == tag_b)


TAG_ALPHABET = string.ascii_letters + string.digits + "/:@._-[]%?# "
PREFIXES = [
    "",
    "docker:",
    "docker://",
    "library://",
    "library:///",
    "oras://",
    "shub://",
    "https://",
    "file://",
    "/",
    "oci:",
    "oci-archive:",
    "docker-archive:",
    "docker-daemon:",
]


@settings(max_examples=500)
@given(
    st.one_of(
        st.text(max_size=30),
        st.tuples(st.sampled_from(PREFIXES), st.text(TAG_ALPHABET, max_size=40)).map("".join),
    )
)
def test_any_text_parses_round_trip_or_fails_with_the_tag_quoted(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReferenceError as exc:
        # quoted, unless it holds what looks like a URL's user:password@, which is masked
        assert quote(text) in str(exc) or "://***@" in str(exc)
        return
    assert parse_reference(ref.canonical()) == ref
