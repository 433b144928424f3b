"""Recipes: a YAML file that pairs a base VLM with an adapter, a dataset, prompts and settings.

The schema is the dataclasses below; `load_recipe` validates a YAML file against them with one-line
errors that name the file, the field and what was expected, e.g.

    recipes/x.yaml: adapter.r: expected a positive integer, got 'abc'

Unknown keys are errors with a close-match suggestion. `--set a.b=value` overrides are applied
before validation. Recipes are found by name in the recipe folders or by path.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from medzoo.errors import MedzooError
from medzoo.prompts import DEFAULT_ADAPTIVE_CATEGORIES, DEFAULT_STATIC_PROMPT, PROMPT_MODES
from medzoo.tasks import TASK_NAMES


class RecipeError(MedzooError, ValueError):
    """A recipe problem, phrased as one line: `<file>: <field>: <what was expected>`."""


def _positive(v) -> bool:
    return v > 0


def _non_negative(v) -> bool:
    return v >= 0


def _unit(v) -> bool:
    return 0 <= v <= 1


def _check(pred, text):
    return {"check": pred, "expected": text}


POSITIVE_INT = _check(_positive, "a positive integer")
POSITIVE = _check(_positive, "a positive number")
NON_NEGATIVE = _check(_non_negative, "a number >= 0")
NON_NEGATIVE_INT = _check(_non_negative, "an integer >= 0")
UNIT = _check(_unit, "a number between 0 and 1")


@dataclass
class RegistryEntry:
    """One named dataset of a conversation-JSON mix (the FLARE25 guide's data registry)."""

    annotation: str = ""  # the JSON/JSONL file
    images: str | None = None  # its image folder (default: next to the annotation file)


@dataclass
class DataSpec:
    """Where examples come from and how many are used."""

    # phantom: generated; disk / hub: a `datasets` folder / Hub id; conversations: Qwen/LLaVA JSON;
    # table: JSON/JSONL/CSV with image paths (PNG/JPEG, DICOM, NIfTI). See medzoo/data/records.py.
    source: Literal["phantom", "disk", "hub", "conversations", "table"] = "phantom"
    # A folder / file / Hub id; for conversations and table a file, or a folder with
    # train/validation/test files. "fixture:NAME" generates offline stand-in data in a seed's schema.
    path: str | None = None
    images_root: str | None = None  # image paths are relative to this (default: the annotation file's folder)
    registry: dict[str, RegistryEntry] = field(default_factory=dict)  # conversations: named annotation files
    mix: str | None = None  # conversations: "name%N,name2" from the registry (N = percent sampled)
    tasks: list[Literal[TASK_NAMES]] = field(default_factory=lambda: ["vqa"])  # medzoo.tasks
    n_train: int = field(default=200, metadata=POSITIVE_INT)  # phantom examples per task and split
    n_val: int = field(default=50, metadata=POSITIVE_INT)
    n_test: int = field(default=50, metadata=POSITIVE_INT)
    seed: int = 0
    image_size: int = field(default=128, metadata=_check(lambda v: v >= 32, "an integer >= 32"))
    box_origin: Literal["upper-left", "lower-left"] = "lower-left"
    background: Literal["synthetic", "dicom"] = "synthetic"
    limit_train: int | None = field(default=None, metadata=POSITIVE_INT)
    limit_val: int | None = field(default=None, metadata=POSITIVE_INT)
    limit_test: int | None = field(default=None, metadata=POSITIVE_INT)
    per_task_limit: dict[str, int] = field(default_factory=dict)
    drop_answers: list[str] = field(default_factory=lambda: ["", "nan"])  # rows with these answers are dropped


@dataclass
class ImageSpec:
    """How the model's processor sizes images; unset fields keep the processor's own setting."""

    min_pixels: int | None = field(default=None, metadata=POSITIVE_INT)  # Qwen families
    max_pixels: int | None = field(default=None, metadata=POSITIVE_INT)
    image_size: int | None = field(default=None, metadata=POSITIVE_INT)  # Gemma: fixed square size


@dataclass
class AdapterSpec:
    method: Literal["lora", "qlora"] = "lora"
    r: int = field(default=16, metadata=POSITIVE_INT)
    alpha: float = field(default=32, metadata=POSITIVE)
    dropout: float = field(default=0.05, metadata=UNIT)
    # "all-linear" = every linear layer of the language model; or a list of module names.
    target_modules: Literal["all-linear"] | list[str] = "all-linear"
    modules_to_save: list[str] = field(default_factory=list)
    train_vision: bool = False  # also put LoRA on the vision tower and projector


@dataclass
class StageSpec:
    """One curriculum stage: continues from the previous stage's adapter."""

    name: str = "stage"
    tasks: list[str] | None = None
    stage_filter: str | None = None  # keep rows whose `stage` column equals this
    categories: list[str] | None = (
        None  # keep rows whose `category` column is one of these (phantom VQA: location, ...)
    )
    epochs: float | None = field(default=None, metadata=POSITIVE)
    max_steps: int | None = field(default=None, metadata=POSITIVE_INT)
    limit_train: int | None = field(default=None, metadata=POSITIVE_INT)
    lr: float | None = field(default=None, metadata=POSITIVE)


@dataclass
class TrainSpec:
    epochs: float = field(default=1.0, metadata=POSITIVE)
    max_steps: int | None = field(default=None, metadata=POSITIVE_INT)  # overrides epochs when set
    lr: float = field(default=2e-4, metadata=POSITIVE)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = field(default=0.03, metadata=UNIT)
    batch_size: int = field(default=8, metadata=POSITIVE_INT)
    grad_accum: int = field(default=1, metadata=POSITIVE_INT)
    weight_decay: float = field(default=0.0, metadata=NON_NEGATIVE)
    max_grad_norm: float = field(default=1.0, metadata=POSITIVE)
    # transformers' optimizer names (the 8-bit ones need bitsandbytes on CUDA).
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adamw_8bit", "paged_adamw_8bit"] = (
        "adamw_torch"
    )
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    gradient_checkpointing: bool = False
    seed: int = 0
    threads: int | None = field(default=None, metadata=POSITIVE_INT)  # torch threads; None = auto
    save_steps: int = field(default=100, metadata=POSITIVE_INT)
    save_total_limit: int = field(default=2, metadata=POSITIVE_INT)
    eval_steps: int = field(default=100, metadata=POSITIVE_INT)
    logging_steps: int = field(default=10, metadata=POSITIVE_INT)
    report_to: list[Literal["tensorboard", "wandb", "none"]] = field(default_factory=lambda: ["tensorboard"])
    stages: list[StageSpec] = field(default_factory=list)


@dataclass
class AdaptiveCategory:
    keywords: list[str] = field(default_factory=list)
    prompt: str = ""


@dataclass
class PromptSpec:
    static: str = DEFAULT_STATIC_PROMPT
    adaptive: dict[str, AdaptiveCategory] = field(
        default_factory=lambda: {k: AdaptiveCategory(list(v[0]), v[1]) for k, v in DEFAULT_ADAPTIVE_CATEGORIES.items()}
    )
    train_mode: Literal["none", "static", "adaptive"] = "none"  # the prompt mode training renders


@dataclass
class BenchSpec:
    split: Literal["train", "validation", "test"] = "test"
    limit: int | None = field(default=None, metadata=POSITIVE_INT)
    max_new_tokens: int = field(default=32, metadata=POSITIVE_INT)
    engine: Literal["vllm", "hf"] = "vllm"
    prompts: list[Literal["none", "static", "adaptive"]] = field(default_factory=lambda: list(PROMPT_MODES))
    bertscore_model: str | None = None  # None = the offline all-MiniLM-L6-v2 from PyPI
    # vLLM scaling, passed through: GPUs per model copy, pipeline stages, model copies.
    tensor_parallel_size: int = field(default=1, metadata=POSITIVE_INT)
    pipeline_parallel_size: int = field(default=1, metadata=POSITIVE_INT)
    data_parallel_size: int = field(default=1, metadata=POSITIVE_INT)


@dataclass
class ParamSpec:
    """One hyper-parameter of a `medzoo tune` search space (keyed by its recipe path, e.g. train.lr)."""

    type: Literal["float", "int", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = field(default=None, metadata=POSITIVE)
    choices: list[int | float | str | bool] = field(default_factory=list)


def _guide_space() -> dict[str, ParamSpec]:
    # The MedGemma guide's space: lr, gradient accumulation and LoRA r / alpha / dropout.
    return {
        "train.lr": ParamSpec("float", 1e-6, 1e-4, log=True),
        "train.grad_accum": ParamSpec("categorical", choices=[1, 2, 4, 8, 16]),
        "adapter.r": ParamSpec("categorical", choices=[16, 32]),
        "adapter.alpha": ParamSpec("categorical", choices=[16, 32, 64, 128]),
        "adapter.dropout": ParamSpec("float", 0.0, 0.1, step=0.01),
    }


@dataclass
class TuneSpec:
    """`medzoo tune`: Optuna TPE search over recipe fields with median pruning."""

    trials: int = field(default=20, metadata=POSITIVE_INT)  # finished trials the study aims for (resumes count)
    objective: Literal["eval_loss", "val_exact_match"] = "eval_loss"
    max_steps: int | None = field(default=None, metadata=POSITIVE_INT)  # per trial; default: the recipe's length
    eval_steps: int | None = field(default=None, metadata=POSITIVE_INT)  # intermediate evaluations (pruning)
    eval_limit: int = field(default=50, metadata=POSITIVE_INT)  # validation examples generated for val_exact_match
    sampler_seed: int = 0
    pruner_startup_trials: int = field(default=5, metadata=NON_NEGATIVE_INT)
    pruner_warmup_steps: int = field(default=0, metadata=NON_NEGATIVE_INT)
    space: dict[str, ParamSpec] = field(default_factory=_guide_space)


@dataclass
class Recipe:
    name: str
    base: str  # "zoo:tiny-qwen2.5-vl", a Hub id ("google/medgemma-4b-it") or a local folder
    description: str = ""
    license: str = "apache-2.0"
    seed: int = 0  # zoo model seed
    run_dir: str | None = None  # default: runs/<name>
    data: DataSpec = field(default_factory=DataSpec)
    image: ImageSpec = field(default_factory=ImageSpec)
    adapter: AdapterSpec = field(default_factory=AdapterSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    prompts: PromptSpec = field(default_factory=PromptSpec)
    bench: BenchSpec = field(default_factory=BenchSpec)
    tune: TuneSpec = field(default_factory=TuneSpec)

    source: str | None = field(default=None, metadata={"internal": True})  # file it was read from

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source", None)
        return d

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def run_path(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name


# ---------------------------------------------------------------- validation


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" (or null)" if type(None) in args else "")
    if origin is list:
        if typing.get_origin(args[0]) is Literal:
            return "a list with items from " + ", ".join(repr(a) for a in typing.get_args(args[0]))
        return f"a list of {_plural(_describe(args[0]))}"
    if origin is dict:
        return f"a mapping of names to {_plural(_describe(args[1]))}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            return text[len(article) :] + "s" if not text.startswith(article + "mapping") else "mappings"
    return text


def _show(value) -> str:
    return repr(value) if not isinstance(value, (dict, list)) else json.dumps(value)[:60]


def _convert(value, tp, where: str, meta: dict):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, where, meta)
            except RecipeError as e:
                errors.append(e)
        raise RecipeError(f"{where}: expected {_describe(tp)}, got {_show(value)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {_show(value)}")
        return _build(tp, value, where)
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"{where}: expected one of {', '.join(repr(a) for a in args)}, got {_show(value)}{hint}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected {_describe(tp)}, got {_show(value)}")
        return [_convert(v, args[0], f"{where}[{i}]", {}) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected {_describe(tp)}, got {_show(value)}")
        return {str(k): _convert(v, args[1], f"{where}.{k}", {}) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            expected = meta.get("expected", "an integer")
            raise RecipeError(f"{where}: expected {expected}, got {_show(value)}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            expected = meta.get("expected", "a number")
            raise RecipeError(f"{where}: expected {expected}, got {_show(value)}")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {_show(value)}")
    if "check" in meta and not meta["check"](value):
        raise RecipeError(f"{where}: expected {meta['expected']}, got {_show(value)}")
    return value


def _build(cls, raw: dict, where: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    prefix = f"{where}." if where else ""
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(fields)}"
            raise RecipeError(f"{prefix}{key}: unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in raw:
            kwargs[name] = _convert(raw[name], hints[name], f"{prefix}{name}", dict(f.metadata))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{prefix}{name}: required key is missing (expected {_describe(hints[name])})")
    return cls(**kwargs)


def _cross_checks(recipe: Recipe) -> None:
    if recipe.data.mix:
        from medzoo.data.records import AnnotationError, parse_mix

        try:
            names = parse_mix(recipe.data.mix)
        except AnnotationError as e:
            raise RecipeError(str(e)) from None
        for name, _ in names:
            if name not in recipe.data.registry:
                raise RecipeError(
                    f"data.mix: {name!r} is not in data.registry (has: {', '.join(recipe.data.registry) or 'nothing'})"
                )
    elif recipe.data.source != "phantom" and not recipe.data.path:
        raise RecipeError(f"data.path: required when data.source is {recipe.data.source!r}")
    if recipe.base.startswith("zoo:"):
        from medzoo.zoo import ZOO

        name = recipe.base[4:]
        if name not in ZOO:
            close = difflib.get_close_matches(name, ZOO, n=1)
            hint = f" (did you mean 'zoo:{close[0]}'?)" if close else ""
            raise RecipeError(
                f"base: unknown zoo model {recipe.base!r}{hint}; known: {', '.join('zoo:' + z for z in ZOO)}"
            )
    for path, p in recipe.tune.space.items():
        _check_param(recipe, path, p)
    for name, cat in recipe.prompts.adaptive.items():
        if not cat.keywords:
            raise RecipeError(f"prompts.adaptive.{name}.keywords: expected at least one keyword")


def _check_param(recipe: Recipe, path: str, p: ParamSpec) -> None:
    where = f"tune.space.{path}"
    node = recipe
    for part in path.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            raise RecipeError(f"{where}: not a recipe field (expected a path such as train.lr or adapter.r)")
        node = getattr(node, part)
    if p.type == "categorical":
        if not p.choices:
            raise RecipeError(f"{where}.choices: expected at least one choice for a categorical parameter")
    elif p.low is None or p.high is None or p.low > p.high:
        raise RecipeError(f"{where}: expected low <= high for a {p.type} parameter, got low={p.low} high={p.high}")
    elif p.log and p.low <= 0:
        raise RecipeError(f"{where}.low: expected a positive number on a log scale, got {p.low}")


def apply_values(recipe: Recipe, values: dict[str, Any], **top: Any) -> Recipe:
    """A copy of `recipe` with dotted-path fields set (e.g. {"train.lr": 1e-4}), validated again."""
    raw = recipe.to_dict()
    raw.update(top)
    for path, value in values.items():
        node = raw
        *parents, leaf = path.split(".")
        for k in parents:
            node = node[k]
        node[leaf] = value
    try:
        out = _build(Recipe, raw, "")
        _cross_checks(out)
    except RecipeError as e:
        raise RecipeError(f"{recipe.source or recipe.name}: {e}") from None
    out.source = recipe.source
    return out


# ---------------------------------------------------------------- loading


def recipe_dirs() -> list[Path]:
    """Where recipe names are looked up: $MEDZOO_RECIPES (colon-separated), ./recipes, the shipped ones."""
    dirs = [Path(p) for p in os.environ.get("MEDZOO_RECIPES", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "recipes", Path(__file__).resolve().parent.parent / "recipes"]
    seen, out = set(), []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out


def available_recipes() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in recipe_dirs():
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def find_recipe(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not p.exists():
            raise RecipeError(f"{name_or_path}: no such recipe file")
        return p
    known = available_recipes()
    if name_or_path in known:
        return known[name_or_path]
    close = difflib.get_close_matches(name_or_path, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise RecipeError(f"{name_or_path}: no recipe with this name{hint}; see `medzoo recipes list`")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=2e-4` -> (["train", "lr"], 0.0002). Values are parsed as YAML scalars/lists."""
    import yaml

    if "=" not in text:
        raise RecipeError(f"--set {text}: expected KEY=VALUE, e.g. train.lr=2e-4")
    key, value = text.split("=", 1)
    if not key.strip():
        raise RecipeError(f"--set {text}: empty key")
    parsed = yaml.safe_load(value) if value.strip() else ""
    if isinstance(parsed, str) and _looks_like_float(parsed):
        parsed = float(parsed)  # YAML 1.1 reads 2e-4 as a string
    return key.strip().split("."), parsed


def _looks_like_float(s: str) -> bool:
    try:
        float(s)
        return any(c in s.lower() for c in ".e") and s.strip().lower() not in ("nan", "inf", "-inf")
    except ValueError:
        return False


def _fix_yaml_floats(node):
    if isinstance(node, dict):
        return {k: _fix_yaml_floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_yaml_floats(v) for v in node]
    if isinstance(node, str) and _looks_like_float(node):
        return float(node)
    return node


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Load, override and validate a recipe; raises RecipeError with a one-line message."""
    import yaml

    path = find_recipe(name_or_path)
    label = _label(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise RecipeError(f"{label}: {where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{label}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = _fix_yaml_floats(raw)
    raw = _resolve_extends(raw, label, seen=(str(path.resolve()),))
    raw["name"] = raw.get("name") if raw.get("name") and "_own_name" in raw else path.stem
    raw.pop("_own_name", None)
    overridden = set()
    for text in overrides or []:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {text}: {k} is not a mapping")
        node[keys[-1]] = value
        overridden.add(".".join(keys))
    try:
        recipe = _build(Recipe, raw, "")
        _cross_checks(recipe)
    except RecipeError as e:
        msg = str(e)
        field_path = msg.split(":", 1)[0]
        suffix = " (from --set)" if any(field_path.startswith(o) for o in overridden) else ""
        raise RecipeError(f"{label}: {msg}{suffix}") from None
    recipe.source = str(path)
    return recipe


def _resolve_extends(raw: dict, label: str, seen: tuple) -> dict:
    """`extends: OTHER` = OTHER's YAML deep-merged under this file's keys (a tiny twin of a seed recipe
    states only what differs). Mappings merge key by key; lists and scalars replace."""
    import yaml

    own_name = "name" in raw
    parent_name = raw.pop("extends", None)
    if parent_name is None:
        return {**raw, **({"_own_name": True} if own_name else {})}
    parent_path = find_recipe(str(parent_name))
    if str(parent_path.resolve()) in seen:
        raise RecipeError(f"{label}: extends: {parent_name!r} extends itself (cycle)")
    parent = _fix_yaml_floats(yaml.safe_load(parent_path.read_text()) or {})
    parent = _resolve_extends(parent, _label(parent_path), seen + (str(parent_path.resolve()),))
    parent.pop("name", None)
    parent.pop("_own_name", None)
    parent.pop("run_dir", None)
    merged = _deep_merge(parent, raw)
    if own_name:
        merged["_own_name"] = True
    return merged


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def prompt_settings(recipe: Recipe):
    """The recipe's prompts as medzoo.prompts.PromptSettings."""
    from medzoo.prompts import PromptSettings

    adaptive = {k: {"keywords": v.keywords, "prompt": v.prompt} for k, v in recipe.prompts.adaptive.items()}
    return PromptSettings(static=recipe.prompts.static, adaptive=adaptive, train_mode=recipe.prompts.train_mode)
