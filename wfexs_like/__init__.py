"""wfexs-like: pull workflow containers once, pin them by digest, cache, stage and deploy them.

The public names are resolved on first use (PEP 562): ``import wfexs_like``
and ``wfexs-like --help`` then cost almost nothing, and YAML, requests or the
Docker SDK are imported only by the code that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "META_JSON_POSTFIX": ".model",
    "Container": ".model",
    "ContainerEngineException": ".errors",
    "ContainerFactoryException": ".errors",
    "ContainerNotFoundException": ".errors",
    "ContainerTaggedName": ".model",
    "ContainerType": ".model",
    "Reference": ".references",
    "dump_containers": ".provenance",
    "load_containers": ".provenance",
    "parse_reference": ".references",
    "read_containers_file": ".provenance",
    "write_containers_file": ".provenance",
}

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .errors import ContainerEngineException, ContainerFactoryException, ContainerNotFoundException
    from .model import META_JSON_POSTFIX, Container, ContainerTaggedName, ContainerType
    from .provenance import dump_containers, load_containers, read_containers_file, write_containers_file
    from .references import Reference, parse_reference
