"""Where medzoo keeps what it builds: zoo models, datasets, caches (env MEDZOO_HOME)."""

from __future__ import annotations

import os
from pathlib import Path


def medzoo_home() -> Path:
    """The medzoo home directory: $MEDZOO_HOME, else the user cache dir (~/.cache/medzoo)."""
    env = os.environ.get("MEDZOO_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "medzoo"


def zoo_dir() -> Path:
    return medzoo_home() / "zoo"


def data_dir() -> Path:
    return medzoo_home() / "data"
