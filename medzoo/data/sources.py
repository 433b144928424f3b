"""Dataset sources: the recipe's `data` section -> a `datasets.DatasetDict` of train/validation/test.

The phantom is generated once per configuration and cached under $MEDZOO_HOME/data, keyed by its
fingerprint (atomic rename, so two processes never see a half-written copy).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

from medzoo.errors import InvalidValue, MissingState
from medzoo.paths import data_dir

_loaded: dict | None = None  # spec key -> DatasetDict, while inside `loaded_once()`


def phantom_config(spec):
    from medzoo.data.phantom import PhantomConfig

    return PhantomConfig(
        tasks=tuple(spec.tasks),
        n_train=spec.n_train,
        n_val=spec.n_val,
        n_test=spec.n_test,
        seed=spec.seed,
        image_size=spec.image_size,
        box_origin=spec.box_origin,
        background=spec.background,
    )


def phantom_path(spec) -> Path:
    """The cached phantom dataset for a recipe's data spec, generated on first use."""
    from medzoo.data import phantom

    cfg = phantom_config(spec)
    path = data_dir() / f"phantom-{cfg.fingerprint()}"
    if not (path / "phantom.json").exists():
        try:
            phantom.write(cfg, path, progress=True)
        except FileExistsError:
            pass  # another process finished first
    return path


SPLIT_NAMES = ("train", "validation", "test")


def resolve_path(spec) -> Path | None:
    """data.path as a local path; `fixture:NAME` is generated (once) under $MEDZOO_HOME/fixtures."""
    if not spec.path:
        return None
    if spec.path.startswith("fixture:"):
        from medzoo.data.fixtures import fixture_path

        return fixture_path(spec.path[len("fixture:") :], seed=spec.seed)
    return Path(spec.path)


def _annotation_splits(spec) -> dict[str, list[dict]]:
    """conversations / table sources -> rows per split."""
    from medzoo.data import records

    root = resolve_path(spec)
    images_root = Path(spec.images_root) if spec.images_root else None
    if images_root is not None and not images_root.is_absolute() and not images_root.exists() and root is not None:
        images_root = (root if root.is_dir() else root.parent) / images_root  # relative to the data folder
    if spec.mix:
        rows = []
        for name, pct in records.parse_mix(spec.mix):
            entry = spec.registry[name]
            ann = Path(entry.annotation)
            if not ann.is_absolute() and root is not None:
                ann = root / ann
            if not ann.exists():
                raise MissingState(f"data.registry.{name}.annotation: {ann}: no such file")
            imgs = Path(entry.images) if entry.images else None
            if imgs is not None and not imgs.is_absolute() and root is not None:
                imgs = root / imgs
            rows += records.sample(records.conversation_rows(ann, imgs, name=name), pct, spec.seed)
        return {"train": rows}
    if root is None or not root.exists():
        raise MissingState(f"data.path: {spec.path}: no such file or folder")
    read = records.conversation_rows if spec.source == "conversations" else records.table_rows
    if root.is_dir():
        files = {
            split: f
            for split in SPLIT_NAMES
            for f in sorted(root.glob(f"{split}.*"))
            if f.suffix in (".json", ".jsonl", ".csv")
        }
        if not files:  # one annotation file of any name holds every split (or a `split` column does)
            found = [
                f
                for f in sorted(root.iterdir())
                if f.suffix in (".json", ".jsonl", ".csv") and f.name != "fixture.json"
            ]
            if len(found) != 1:
                raise MissingState(
                    f"data.path: {root}: expected train/validation/test .json, .jsonl or .csv files, or exactly one annotation file, in the folder"
                )
            root = found[0]
        else:
            return {split: read(f, images_root) for split, f in files.items()}
    rows = read(root, images_root)
    if any(r.get("split") for r in rows):  # a table with a split column
        return {
            split: [r for r in rows if r.get("split") == split]
            for split in SPLIT_NAMES
            if any(r.get("split") == split for r in rows)
        }
    return {"train": rows}


@contextlib.contextmanager
def loaded_once():
    """Within this block each data spec is loaded once: a training run asks for its splits several
    times (validation, each stage, fingerprint, held-out rows), and annotation files with DICOM or
    NIfTI would otherwise be parsed and converted again every time. Scoped, not global, so a
    notebook that edits its annotation files between runs sees the edits."""
    global _loaded
    outer = _loaded
    _loaded = {} if outer is None else outer
    try:
        yield
    finally:
        _loaded = outer


def load_splits(spec):
    """The recipe's dataset as a DatasetDict (train / validation / test where available)."""
    if _loaded is None:
        return _load_splits(spec)
    key = json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)
    if key not in _loaded:
        _loaded[key] = _load_splits(spec)
    return _loaded[key]


def _load_splits(spec):
    from datasets import load_from_disk

    if spec.source == "phantom":  # ids are unique by construction
        return load_from_disk(str(phantom_path(spec)))
    dd = _load_other(spec)
    check_unique_ids(dd, spec.path)
    return dd


def check_unique_ids(dd, where: str) -> None:
    """Bench records and their resume are keyed by (configuration, id): two examples with one id
    would make a resumed bench finish with fewer records than examples, so it is an error."""
    from collections import Counter

    for split, ds in dd.items():
        repeated = [(i, n) for i, n in Counter(map(str, ds["id"])).items() if n > 1]
        if repeated:
            shown = ", ".join(f"{i!r} x{n}" for i, n in repeated[:5]) + (" ..." if len(repeated) > 5 else "")
            raise InvalidValue(
                f"data.path: {where}: split {split!r} has {len(repeated)} duplicate example id(s) ({shown}); "
                "ids key bench records and resume, make them unique"
            )


def _load_other(spec):
    from datasets import DatasetDict, load_dataset, load_from_disk

    if spec.source in ("conversations", "table"):
        from medzoo.data.records import to_dataset

        splits = {split: rows for split, rows in _annotation_splits(spec).items() if rows}
        if not splits:
            raise InvalidValue(f"data.path: {spec.path}: the annotation file(s) hold no examples")
        spacing = spec.pixel_spacing_mm
        return ensure_splits(DatasetDict({s: to_dataset(rows, spacing) for s, rows in splits.items()}), spec.seed)
    if spec.source == "disk":
        path = resolve_path(spec)
        if not path.exists():
            raise MissingState(f"data.path: {spec.path}: no such dataset folder")
        ds = load_from_disk(str(path))
    else:  # hub
        ds = load_dataset(spec.path)
    if not isinstance(ds, DatasetDict):
        ds = DatasetDict({"train": ds})
    return ensure_splits(ds, spec.seed)


def ensure_splits(dd, seed: int):
    """A dataset with one split (Kvasir-VQA's `raw`) gets deterministic validation and test splits
    carved out of it, so evaluation never runs on training examples."""
    from datasets import DatasetDict

    if len(dd) == 1 and "train" not in dd:
        dd = DatasetDict({"train": next(iter(dd.values()))})
    for split, ds in list(dd.items()):
        if "id" not in ds.column_names:  # records are keyed by id (Kvasir-VQA has img_id, shared by its questions)
            dd[split] = ds.add_column("id", [f"{split}-{i:06d}" for i in range(len(ds))])
    if "test" not in dd and "train" in dd and len(dd["train"]) >= 20:
        parts = dd["train"].train_test_split(test_size=min(0.1, 500 / len(dd["train"])), seed=seed)
        dd = DatasetDict({**dd, "train": parts["train"], "test": parts["test"]})
    return dd


def most_images(ds) -> int:
    """The most images one row of `ds` holds (1 for single-image data), counted in Arrow: nothing
    is decoded or copied."""
    if "images" not in ds.column_names:
        return 1
    import pyarrow.compute as pc

    lengths = pc.list_value_length(ds.select_columns(["images"]).with_format("arrow")["images"])
    return max(pc.max(lengths).as_py() or 1, 1)


def first_rows(spec, split: str, n: int, counter=None) -> tuple[str, list]:
    """The first `n` usable rows of `split` (or of the first split if the dataset lacks it), decoded
    and cleaned as for training (unreadable images and empty answers skipped, counted in `counter`)."""
    from medzoo.preprocess import DropCounter, usable_rows

    splits = load_splits(spec)
    name = split if split in splits else next(iter(splits))
    counter = counter if counter is not None else DropCounter()
    rows = usable_rows(splits[name], n, spec.drop_answers, counter)
    if not rows:
        raise InvalidValue(f"data: split {name!r} has no usable example ({counter.describe() or 'it is empty'})")
    return name, rows
