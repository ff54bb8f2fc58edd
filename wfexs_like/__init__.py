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

__all__ = [
    "META_JSON_POSTFIX",
    "Container",
    "ContainerEngineException",
    "ContainerFactoryException",
    "ContainerNotFoundException",
    "ContainerTaggedName",
    "ContainerType",
]
__version__ = "0.1.0"
