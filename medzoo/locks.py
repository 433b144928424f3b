"""One writer per output folder: a results folder, a run folder, a cache entry.

Two processes writing the same folder interleave their files (two benches once left 31 records
for 16 answers, and a rerun took them as complete). Each writer holds an OS file lock beside the
folder (`.locks/<name>.lock`, released by the OS if the process dies, so a killed run never leaves a
stale lock) for the whole write; a second writer fails at once with one line naming the holder.
The lock sits beside the folder (in `.locks/`), not in it, because writers replace or remove the
folder itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from medzoo.errors import Busy


def _lock_path(folder: Path) -> Path:
    return folder.parent / ".locks" / f"{folder.name}.lock"


def _holder(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.with_suffix(".holder").read_text())
    except (OSError, ValueError):
        return "another process"
    return f"process {info.get('pid')} (`{info.get('command')}`, since {info.get('since')})"


@contextlib.contextmanager
def exclusive(folder: str | Path, what: str, wait: bool = False, log=None) -> Iterator[None]:
    """Hold `folder` for writing `what` (e.g. "bench results"); Busy if another process holds it,
    or with `wait`, wait for it (a shared cache entry: the second process then reads what the
    first built)."""
    import filelock

    folder = Path(folder)
    lock_file = _lock_path(folder)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout as e:
        if not wait:
            raise Busy(
                f"{folder}: already being written ({what}) by {_holder(lock_file)}; wait for it to finish, or stop it"
            ) from e
        if log:
            log(f"waiting for {_holder(lock_file)}, which is writing {what} in {folder}")
        lock.acquire()
    yield from _held(lock, lock_file)


def _held(lock, lock_file: Path) -> Iterator[None]:
    holder = lock_file.with_suffix(".holder")
    try:
        holder.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "command": " ".join(["medzoo", *sys.argv[1:]]) if sys.argv else "python",
                    "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
            )
        )
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            holder.unlink()
        lock.release()
