"""The container technologies, in a module of their own.

Both tag parsing (``references``, for per-type default registries) and the
records (``model``) need :class:`ContainerType`; keeping it below both lets
``model`` use ``references`` without either importing the other in a cycle.
"""

from __future__ import annotations

import enum

__all__ = ["ContainerType", "coerce_container_type"]


class ContainerType(enum.Enum):
    """Container technologies, with the reference's string values.

    ``Apptainer`` shares Singularity's value on purpose: the reference makes
    it an alias, and both engines read the same SIF files.
    """

    Singularity = "singularity"
    Apptainer = "singularity"
    Docker = "docker"
    UDocker = "udocker"
    Podman = "podman"
    Conda = "conda"
    NoContainer = "none"


def coerce_container_type(value: ContainerType | str) -> ContainerType:
    """Accept a type as records and command lines spell it: the member, its value or its name.

    YAML records carry the value (``"docker"``) and people type the name
    (``"Docker"``); both must land on the same member.
    """
    if isinstance(value, ContainerType):
        return value
    try:
        return ContainerType(value)
    except ValueError:
        try:
            return ContainerType[value]
        except KeyError:
            choices = ", ".join(sorted({t.value for t in ContainerType}))
            raise ValueError(f"unknown container type {value!r}; expected one of: {choices}") from None
