"""Annotation files -> medzoo rows (id, image(s), question, answer, task, category, stage, metadata).

Formats the seed workflows use:

- `conversations`: Qwen/LLaVA conversation JSON (a list, or JSONL) of
  `{"image": "a.png" | ["a.png", "b.png"], "conversations": [{"from": "human", "value": "<image>\\n..."},
  {"from": "gpt", "value": "..."}, ...]}`; every human/gpt pair becomes one example with the
  record's images. Several annotation files are mixed through a registry with Qwen-VL's
  `name%N` sampling (N percent of that dataset, deterministic).
- `table`: JSON / JSONL / CSV rows with an image path (`image`, `image_path` or `image_id`), a
  question and an answer, optionally `task`, `category`, `stage`, `split`, `slice`, `window_center`,
  `window_width`.

Image paths may point at PNG/JPEG, DICOM (`.dcm`, pydicom) or NIfTI (`.nii`, `.nii.gz`, nibabel;
the middle axial slice unless `slice` is given). CT/MR values become 8-bit explicitly (a given
window, else the 1st-99th percentile) and the physical pixel spacing is carried into the example's
metadata, from where measurement prompts state it; the windowing used is recorded there too.
Images are read lazily, when the `datasets` Image column is first decoded.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from pathlib import Path

from medzoo.errors import MedzooError


class AnnotationError(MedzooError, ValueError):
    """An annotation file problem, as one line: `<file>: <record>: <what was expected>`."""


def read_records(path: Path) -> list[dict]:
    """JSON list, JSONL or CSV rows, each a mapping (a one-line error names the record that is not)."""
    records = _read_any(path)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise AnnotationError(f"{path}: record {i}: expected a JSON object, got {type(rec).__name__}")
    return records


def _text(value) -> str:
    """An annotation value as text; a missing one (JSON null) is empty, never the string 'None'."""
    return "" if value is None else str(value).strip()


def _read_any(path: Path) -> list:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    if path.suffix == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    if path.suffix == ".jsonl":
        out = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise AnnotationError(f"{path}: line {i + 1}: not valid JSON ({e.msg})") from e
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from e
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def conversation_rows(path: Path, images_root: Path | None = None, name: str = "") -> list[dict]:
    """Examples of one Qwen/LLaVA conversation file (one per human/gpt pair)."""
    root = images_root or path.parent
    rows = []
    for i, rec in enumerate(read_records(path)):
        where = f"{path}: record {i}"
        convs = rec.get("conversations")
        if not isinstance(convs, list) or len(convs) < 2 or not all(isinstance(c, dict) for c in convs):
            raise AnnotationError(f"{where}: expected 'conversations' with a human and a gpt turn")
        images = rec.get("image", rec.get("images"))
        images = [images] if isinstance(images, str) else list(images or [])
        if not images:
            raise AnnotationError(f"{where}: expected an 'image' path or a list of paths")
        turns = [(c.get("from"), c.get("value", "")) for c in convs]
        for k in range(0, len(turns) - 1, 2):
            (who_q, q), (who_a, a) = turns[k], turns[k + 1]
            if who_q != "human" or who_a != "gpt":
                raise AnnotationError(f"{where}: turn {k}: expected human then gpt, got {who_q!r} then {who_a!r}")
            n_tags = _text(q).count("<image>")
            if k == 0 and n_tags not in (0, len(images)):
                raise AnnotationError(f"{where}: {n_tags} <image> tags for {len(images)} images")
            rows.append(
                {
                    "id": f"{name or path.stem}-{rec.get('id', i)}-{k // 2}",
                    "image_paths": [str(root / im) for im in images],
                    "question": _text(q).replace("<image>", "").strip(),
                    "answer": _text(a),
                    "task": rec.get("task", "vqa"),
                    "category": rec.get("category", name or ""),
                    "stage": str(rec.get("stage", "")),
                    "metadata": json.dumps(rec.get("metadata", {})),
                }
            )
    return rows


def table_rows(path: Path, images_root: Path | None = None) -> list[dict]:
    root = images_root or path.parent
    rows = []
    for i, rec in enumerate(read_records(path)):
        image = rec.get("image") or rec.get("image_path") or rec.get("image_id")
        if not image:
            raise AnnotationError(f"{path}: record {i}: expected an 'image', 'image_path' or 'image_id' column")
        for key in ("question", "answer"):
            if key not in rec:
                raise AnnotationError(f"{path}: record {i}: expected a {key!r} column")
        image = str(image)
        if not Path(image).suffix:  # an image id: look for a file of that name
            found = sorted(root.glob(f"{image}.*"))
            image = found[0].name if found else image
        meta = _metadata(rec.get("metadata"), f"{path}: record {i}: metadata")
        for key in ("slice", "slice_axis", "frame", "window_center", "window_width"):
            if rec.get(key) not in (None, ""):
                meta[key] = _number(rec[key], key in ("slice", "slice_axis", "frame"), f"{path}: record {i}: {key}")
        rows.append(
            {
                "id": str(rec.get("id", f"{path.stem}-{i}")),
                "image_paths": [str(root / image)],
                "question": _text(rec["question"]),
                "answer": _text(rec["answer"]),
                "task": rec.get("task") or "vqa",
                "category": rec.get("category") or "",
                "stage": str(rec.get("stage", "")),
                "split": rec.get("split") or "",
                "metadata": json.dumps(meta),
            }
        )
    return rows


def _metadata(value, where: str) -> dict:
    """A record's metadata: a mapping, or JSON text of one (CSV cells are text)."""
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise AnnotationError(f"{where}: expected a JSON object, got {value[:60]!r} ({e.msg})") from e
    if not isinstance(value, dict):
        raise AnnotationError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return dict(value)


def _number(value, integer: bool, where: str):
    """A numeric column (CSV cells are text): an int for slice/frame indices, else a finite float."""
    try:
        number = float(value)
    except (TypeError, ValueError) as e:
        kind = "an integer" if integer else "a number"
        raise AnnotationError(f"{where}: expected {kind}, got {value!r}") from e
    if not math.isfinite(number) or (integer and not number.is_integer()):
        raise AnnotationError(f"{where}: expected {'an integer' if integer else 'a finite number'}, got {value!r}")
    return int(number) if integer else number


def sample(rows: list[dict], percent: float, seed: int) -> list[dict]:
    """Qwen-VL's `name%N`: N percent of a dataset's examples, the same ones every run."""
    if percent >= 100:
        return rows
    k = max(1, round(len(rows) * percent / 100))
    return sorted(random.Random(seed).sample(rows, k), key=lambda r: rows.index(r))


def parse_mix(mix: str) -> list[tuple[str, float]]:
    """'flare_ct%50,flare_mri' -> [('flare_ct', 50.0), ('flare_mri', 100.0)]."""
    out = []
    for part in (p.strip() for p in mix.split(",") if p.strip()):
        name, _, pct = part.partition("%")
        try:
            out.append((name, float(pct) if pct else 100.0))
        except ValueError as e:
            raise AnnotationError(f"data.mix: {part!r}: expected NAME or NAME%PERCENT") from e
    return out


def to_dataset(rows: list[dict], default_spacing_mm: float | None = None):
    """Rows -> a `datasets.Dataset` with an Image column (`image`, and `images` for multi-image).

    Plain images stay paths, decoded lazily; DICOM/NIfTI slices are converted once here to PNG bytes
    (format, frame or slice, windowing, spacing and its source go into metadata, medzoo.data.medical).
    `default_spacing_mm` (the recipe's data.pixel_spacing_mm) is the spacing of images without one."""
    from datasets import Dataset, Features, Image, Sequence, Value

    from medzoo.data.medical import is_medical, load_medical_image

    multi = any(len(r["image_paths"]) > 1 for r in rows)
    out = []
    for r in rows:
        meta = json.loads(r["metadata"])
        imgs = []
        for p in r["image_paths"]:
            if is_medical(p):
                try:
                    buf = io.BytesIO()
                    load_medical_image(p, meta, default_spacing_mm).save(buf, format="PNG")
                    imgs.append({"bytes": buf.getvalue(), "path": None})
                except (OSError, ValueError) as e:  # unreadable: kept, and dropped (and counted) by cleaning
                    meta["unreadable"] = str(e).splitlines()[0][:200]
                    imgs.append({"bytes": None, "path": p})
            else:
                imgs.append({"bytes": None, "path": p})
        if default_spacing_mm is not None and "pixel_spacing_mm" not in meta:
            meta["pixel_spacing_mm"] = [float(default_spacing_mm)] * 2
            meta["spacing_source"] = "recipe data.pixel_spacing_mm"
        row = {k: v for k, v in r.items() if k not in ("image_paths", "split")}
        row["metadata"] = json.dumps(meta)
        row["image"] = imgs[0]
        if multi:
            row["images"] = imgs
        out.append(row)
    cols = {
        "id": Value("string"),
        "question": Value("string"),
        "answer": Value("string"),
        "task": Value("string"),
        "category": Value("string"),
        "stage": Value("string"),
        "metadata": Value("string"),
        "image": Image(),
    }
    if multi:
        cols["images"] = Sequence(Image())
    ds = Dataset.from_list(out, features=Features(cols))
    # In-memory datasets get a random fingerprint; the preprocessing cache needs a stable one.
    ds._fingerprint = rows_fingerprint(rows)
    return ds


def rows_fingerprint(rows: list[dict]) -> str:
    """Annotation content + each image file's size and mtime."""
    import hashlib
    import os

    h = hashlib.sha256(json.dumps(rows, sort_keys=True).encode())
    for r in rows:
        for p in r["image_paths"]:
            try:
                st = os.stat(p)
                h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                h.update(f"{p}:missing".encode())
    return h.hexdigest()[:16]
