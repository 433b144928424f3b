"""The results folder: records reused by what produced them, resumable appends, provenance.

Every record carries `producer`: the digest of everything that decides its answer and scores
(base, adapter digest, prompt mode and that mode's system prompt, image settings, generation
length, engine and how it serves adapters, scoring). A bench answers each (configuration, example)
from a record with the same producer and the same example (id, prompt, image, reference), found in
its own folder or in any other results folder of the run, and generates only the rest. So a second
bench with fewer prompt modes, a `--limit`, or a new mode added to the same folder is never refused
and never recomputes what is there; records of another adapter are never mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# Bump when per-example scoring changes: records scored by older code are then regenerated.
SCORING_VERSION = 1
RECORDS = "records.jsonl"


def producer_digest(producer: dict) -> str:
    return hashlib.sha256(json.dumps(producer, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def open_results(out: Path, log) -> list[dict]:
    """The folder's records (created when new); a torn tail is cut so appends start on a clean line."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / RECORDS
    records = read_records(path)
    if path.exists() and len(path.read_text().splitlines()) != len(records):
        log(f"bench: {path}: dropping a record cut short by an interrupted run")
        write_records(path, records)
    return records


def sibling_records(out: Path) -> list[dict]:
    """Records in the other results folders beside `out` (the run's other benches)."""
    found = []
    for path in sorted(out.parent.glob(f"*/{RECORDS}")):
        if path.parent != out:
            found += read_records(path)
    return found


def write_records(path: Path, records: list[dict]) -> None:
    from medzoo.atomic import write_text

    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def append_records(path: Path, records: list[dict]) -> None:
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())
