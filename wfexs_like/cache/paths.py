"""Where the cache lives when nobody says.

The XDG cache home is the right default: the cache can always be rebuilt,
and backup tools and cluster admins already know to skip that tree.
"""

from __future__ import annotations

import os
from pathlib import Path

from xdg_base_dirs import xdg_cache_home

ENV_CACHE_DIR = "WFEXS_LIKE_CACHE_DIR"


def default_cache_dir() -> Path:
    override = os.environ.get(ENV_CACHE_DIR)
    if override:
        return Path(override).expanduser().absolute()
    return xdg_cache_home() / "wfexs-like"
