"""wfexs-like: pull workflow containers once, pin them by digest, cache, stage and deploy them."""

from .errors import (
    ContainerEngineException,
    ContainerFactoryException,
    ContainerNotFoundException,
)
from .model import (
    META_JSON_POSTFIX,
    Container,
    ContainerTaggedName,
    ContainerType,
)
from .provenance import dump_containers, load_containers, read_containers_file, write_containers_file
from .references import Reference, parse_reference

__all__ = [
    "META_JSON_POSTFIX",
    "Container",
    "ContainerEngineException",
    "ContainerFactoryException",
    "ContainerNotFoundException",
    "ContainerTaggedName",
    "ContainerType",
    "Reference",
    "dump_containers",
    "load_containers",
    "parse_reference",
    "read_containers_file",
    "write_containers_file",
]
__version__ = "0.1.0"
