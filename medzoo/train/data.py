"""What a training run trains on: stages of a recipe, the per-run context, and the cached preprocessed splits."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace

from medzoo.errors import InvalidValue


@dataclass
class Stage:
    index: int
    name: str
    data: object  # DataSpec with the stage's overrides applied
    stage_filter: str | None
    categories: list[str] | None
    epochs: float
    max_steps: int | None
    lr: float

    @property
    def dirname(self) -> str:
        return f"{self.index:02d}-{self.name}"


@dataclass
class TrainContext:
    """Everything loaded once per run and shared by the stages."""

    recipe: object
    model_path: str
    family: object
    image_settings: dict
    processor: object
    prompt_settings: object
    drops: dict = field(default_factory=dict)

    @classmethod
    def for_recipe(cls, recipe) -> TrainContext:
        """Resolve the recipe's base model, family, image settings, processor and prompt settings."""
        from medzoo.models.loading import recipe_base
        from medzoo.recipe import prompt_settings

        base = recipe_base(recipe)
        return cls(recipe, base.path, base.family, base.image_settings, base.processor, prompt_settings(recipe))


def stages_of(recipe) -> list[Stage]:
    t = recipe.train
    if not t.stages:
        return [Stage(0, "main", recipe.data, None, None, t.epochs, t.max_steps, t.lr)]
    out = []
    for i, s in enumerate(t.stages):
        data = recipe.data
        if s.tasks:
            data = replace(data, tasks=list(s.tasks))
        if s.limit_train:
            data = replace(data, limit_train=s.limit_train)
        out.append(
            Stage(
                i,
                s.name,
                data,
                s.stage_filter,
                s.categories,
                s.epochs if s.epochs is not None else t.epochs,
                s.max_steps if s.max_steps is not None else (t.max_steps if s.epochs is None else None),
                s.lr if s.lr is not None else t.lr,
            )
        )
    return out


def choose_threads(recipe, n_params: int | None = None) -> int:
    if recipe.train.threads:
        return recipe.train.threads
    # Tiny models: one thread beats two by a wide margin on small matrices (measured).
    if n_params is not None and n_params < 200_000_000:
        return 1
    return os.cpu_count() or 1


# ---------------------------------------------------------------- data


def prepare_split(
    ctx: TrainContext,
    data_spec,
    split: str,
    limit: int | None,
    stage_filter: str | None = None,
    categories: list[str] | None = None,
):
    """Cleaned, limited, encoded split (cached on disk). Returns (dataset, cache_hit)."""
    from medzoo.cache import cached_dataset
    from medzoo.preprocess import DropCounter, Encoder, clean_rows, encode_dataset, limit_rows

    raw = _raw_split(data_spec, split)
    proc = ctx.processor
    key = {
        "dataset": raw._fingerprint,
        "split": split,
        "model_type": ctx.family.name,
        "image_settings": ctx.image_settings,
        "image_processor": proc.image_processor.to_dict(),
        "chat_template": proc.chat_template,
        "tokenizer_size": len(proc.tokenizer),
        "prompt_mode": ctx.recipe.prompts.train_mode,
        "prompts": ctx.prompt_settings.__dict__,
        "limit": limit,
        "per_task": data_spec.per_task_limit,
        "stage_filter": stage_filter,
        "categories": sorted(categories) if categories else None,
        "drop_answers": data_spec.drop_answers,
        "seed": data_spec.seed,
    }
    counter = DropCounter()

    def build():
        ds = _stage_rows(raw, split, stage_filter, categories)
        ds = clean_rows(ds, data_spec.drop_answers, counter)
        ds = limit_rows(ds, limit, data_spec.per_task_limit, data_spec.seed)
        enc = Encoder(proc, ctx.family, ctx.prompt_settings, ctx.recipe.prompts.train_mode, ctx.image_settings)
        out = encode_dataset(ds, enc, desc=f"preprocess {split}")
        if len(out) == 0:  # raised before caching: an empty split is never stored as a finished result
            reasons = ", ".join(f"{k}: {v}" for k, v in counter.as_dict().items() if v) or "no rows"
            carved = f"; it was {CARVED}" if split == "validation" and _is_carved(data_spec) else ""
            raise InvalidValue(
                f"data: no usable examples left in split {split!r} after cleaning and limits ({reasons}){carved}"
            )
        # Drops are part of the cached result, so a cache hit still reports them.
        return out.add_column("_drops", [json.dumps(counter.as_dict())] * len(out))

    ds, hit, _ = cached_dataset("preprocessed", key, build)
    if len(ds) == 0:  # an empty entry cached by an older medzoo
        raise InvalidValue(f"data: no usable examples left in split {split!r} after cleaning and limits")
    drops = json.loads(ds[0]["_drops"])
    for k, v in drops.items():
        ctx.drops[f"{split}.{k}"] = ctx.drops.get(f"{split}.{k}", 0) + v
    tensor_cols = [c for c in ds.column_names if c not in ("id", "task", "_drops")]
    ds.set_format("numpy", columns=tensor_cols)
    return ds, hit


def _raw_split(data_spec, split: str):
    """The split as the dataset has it; without a validation split, a deterministic slice of train."""
    from medzoo.data.sources import load_splits

    dd = load_splits(data_spec)
    if split not in dd:
        if split == "validation" and "train" in dd:
            return _carved_validation(dd["train"], data_spec.seed)
        else:
            raise InvalidValue(f"data: the dataset has no {split!r} split (has: {', '.join(dd)})")
    return dd[split]


def _is_carved(data_spec) -> bool:
    from medzoo.data.sources import load_splits

    return "validation" not in load_splits(data_spec)


CARVED = "carved out of the train split: the dataset has no validation split"


def _carved_validation(train, seed: int):
    """10% of train (rounded up; at most 200 rows) as a deterministic validation split."""
    n = len(train)
    if n < 2:
        raise InvalidValue(
            f"data: the dataset has no validation split, and its train split has {n} example(s): too few to "
            "carve one out; add a validation split (a validation file, or a `split` column)"
        )
    size = math.ceil(min(0.1, 200 / n) * n)  # what `datasets` makes of the fraction: the same rows as before
    return train.train_test_split(test_size=size, seed=seed)["test"]


def _stage_rows(ds, split: str, stage_filter: str | None, categories: list[str] | None):
    """The rows a curriculum stage keeps: its `stage` value and/or its question categories."""
    if stage_filter is not None:
        if "stage" not in ds.column_names:
            raise InvalidValue(f"train.stages: stage_filter {stage_filter!r} needs a 'stage' column in the dataset")
        ds = ds.filter(lambda s: str(s) == str(stage_filter), input_columns="stage")
    if categories:
        if "category" not in ds.column_names:
            raise InvalidValue(f"train.stages: categories {categories} need a 'category' column in the dataset")
        wanted, present = set(categories), sorted(set(ds["category"]))
        if not wanted & set(present):
            raise InvalidValue(
                f"train.stages: categories {categories} match no {split} rows (the dataset has: {', '.join(present)})"
            )
        ds = ds.filter(lambda c: c in wanted, input_columns="category")
    return ds


def data_fingerprint(spec) -> str:
    from medzoo.data.sources import load_splits

    dd = load_splits(spec)
    return "-".join(dd[s]._fingerprint for s in sorted(dd))


def raw_rows(ctx: TrainContext, spec, split: str, limit: int):
    from medzoo.data.sources import load_splits
    from medzoo.preprocess import DropCounter, usable_rows

    dd = load_splits(spec)
    if split not in dd:
        return []
    return usable_rows(dd[split], limit, spec.drop_answers, DropCounter())
