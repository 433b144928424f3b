"""The results folder: spec, resumable records, and the atomic move into place when complete."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from medzoo.errors import AlreadyExists


def _spec_digest(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def read_records(path: Path) -> list[dict]:
    """Finished records; a torn last line (killed mid-write) is ignored and recomputed."""
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


def _stored_digest(folder: Path) -> str | None:
    path = folder / "spec.json"
    return json.loads(path.read_text()).get("digest") if path.exists() else None


def open_workdir(out: Path, spec: dict, overwrite: bool, log) -> tuple[Path, list[dict]]:
    """The folder to work in and the records already there (resume)."""
    from medzoo.atomic import write_json

    digest = _spec_digest(spec)
    if out.exists():
        if _stored_digest(out) == digest:
            return out, read_records(out / "records.jsonl")
        if not overwrite:
            raise AlreadyExists(
                f"{out}: holds results of a different bench (other settings); pass --overwrite to replace it or --out for a new folder"
            )
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        if _stored_digest(partial) == digest:
            records = read_records(partial / "records.jsonl")
            log(f"bench: resuming {partial} ({len(records)} records done)")
            # Rewrite without a torn tail so appends start on a clean line.
            write_records(partial / "records.jsonl", records)
            return partial, records
        log(f"bench: discarding unfinished {partial} (made with other settings)")
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    write_json(partial / "spec.json", {**spec, "digest": digest})
    return partial, []


def write_records(path: Path, records: list[dict]) -> None:
    from medzoo.atomic import write_text

    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def append_records(path: Path, records: list[dict]) -> None:
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def finish(workdir: Path, out: Path) -> None:
    """Move a completed `<out>.partial` into place; an old `<out>` is replaced, never half-overwritten."""
    if workdir == out:
        return
    from medzoo.atomic import swap_into_place

    swap_into_place(workdir, out)
