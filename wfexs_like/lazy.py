"""Package names resolved on first use (PEP 562), for the packages whose imports are costly.

``import wfexs_like`` and ``wfexs-like --help`` must cost almost nothing, and
an offline re-stage must not import the HTTP stack, so a package's
``__init__`` names what it exports and where, and the defining module is
imported only when a name is first asked for.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``.

    ``exports`` maps each public name to the module defining it, relative to
    the package (``".client"``). A resolved name is bound on the package, so
    it is looked up once.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
