"""On-disk cache of preprocessed datasets, keyed by everything that changes their contents.

A key is a JSON-able dict (dataset fingerprint, model family, processor settings, chat template,
prompt mode, limits, format version); its hash names a folder under $MEDZOO_HOME/cache. The folder
is built in a temporary sibling and renamed into place, so two processes building the same entry
never corrupt it: the second rename loses and its copy is discarded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from medzoo.paths import medzoo_home

# Bump when preprocessing changes what it writes (2: images through data.images as_rgb + for_model;
# 3: pixels stored as uint8, medzoo.preprocess.PixelCodec).
FORMAT_VERSION = 3


def cache_key(parts: dict) -> str:
    blob = json.dumps({**parts, "format": FORMAT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached_dataset(kind: str, parts: dict, build: Callable[[], object]):
    """Load the cached dataset for `parts`, building and saving it first if absent.

    Returns (dataset, hit: bool, path)."""
    from datasets import load_from_disk

    from medzoo.atomic import build_dir
    from medzoo.locks import exclusive

    path = medzoo_home() / "cache" / kind / cache_key(parts)
    if (path / "medzoo-cache.json").exists():
        return load_from_disk(str(path)), True, path
    # One builder per entry; a second process waits for it and reads its result instead of
    # preprocessing the same data again.
    with exclusive(path, "a preprocessed dataset", wait=True, log=print):
        if (path / "medzoo-cache.json").exists():
            return load_from_disk(str(path)), True, path
        ds = build()
        try:
            with build_dir(path) as tmp:
                ds.save_to_disk(str(tmp))
                (tmp / "medzoo-cache.json").write_text(json.dumps(parts, indent=2, sort_keys=True, default=str))
        except FileExistsError:
            pass
    return load_from_disk(str(path)), False, Path(path)
