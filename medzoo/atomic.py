"""Write files and folders so that a reader never sees them half-written.

Everything is produced in a temporary sibling and renamed into place; rename is atomic on one
filesystem, so a crash leaves either the old result or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def build_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to `final`; on success it replaces `final` in one rename.

    If `final` already exists (another process finished first), the fresh copy is discarded:
    builds are deterministic, so both are the same.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary shared folder
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def replace_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to `final`; on success it replaces `final`, old or not.

    Unlike deleting the old folder first, a reader sees the old folder or the new one at every
    moment, and a crash while writing leaves the old one untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_into_place(new: Path, final: Path) -> None:
    """Move folder `new` to `final`, replacing an existing `final` (then removed)."""
    if not final.exists():
        os.rename(new, final)
        return
    if _exchange(new, final):  # one atomic swap: `new` now holds the old folder
        shutil.rmtree(new, ignore_errors=True)
        return
    trash = final.with_name(f".{final.name}.old-{os.getpid()}")  # no renameat2: two renames
    os.rename(final, trash)
    os.rename(new, final)
    shutil.rmtree(trash, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    ok = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
    return ok
