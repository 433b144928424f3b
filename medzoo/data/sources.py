"""Dataset sources: the recipe's `data` section -> a `datasets.DatasetDict` of train/validation/test.

The phantom is generated once per configuration and cached under $MEDZOO_HOME/data, keyed by its
fingerprint (atomic rename, so two processes never see a half-written copy).
"""

from __future__ import annotations

from pathlib import Path

from medzoo.paths import data_dir


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


def load_splits(spec):
    """The recipe's dataset as a DatasetDict (train / validation / test where available)."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    if spec.source == "phantom":
        return load_from_disk(str(phantom_path(spec)))
    if spec.source == "disk":
        if not Path(spec.path).exists():
            raise FileNotFoundError(f"data.path: {spec.path}: no such dataset folder")
        ds = load_from_disk(spec.path)
    else:  # hub
        ds = load_dataset(spec.path)
    if not isinstance(ds, DatasetDict):
        ds = DatasetDict({"train": ds})
    return ds


def first_rows(spec, split: str, n: int) -> tuple[str, list]:
    """The first `n` rows of `split` (or of the first split if the dataset lacks it), decoded."""
    splits = load_splits(spec)
    name = split if split in splits else next(iter(splits))
    ds = splits[name]
    return name, [ds[i] for i in range(min(n, len(ds)))]
