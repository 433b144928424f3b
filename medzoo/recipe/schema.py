"""The recipe schema: one dataclass per section, with the checks each field's metadata names."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medzoo.errors import MedzooError
from medzoo.prompts import DEFAULT_ADAPTIVE_CATEGORIES, DEFAULT_STATIC_PROMPT, PROMPT_MODES
from medzoo.tasks import TASK_NAMES


class RecipeError(MedzooError, ValueError):
    """A recipe problem, phrased as one line: `<file>: <field>: <what was expected>`."""


def _positive(v) -> bool:
    return math.isfinite(v) and v > 0  # `lr: .inf` is YAML's infinity: training would diverge at once


def _non_negative(v) -> bool:
    return math.isfinite(v) and v >= 0


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
    seed: int = field(default=0, metadata=NON_NEGATIVE_INT)
    image_size: int = field(default=128, metadata=_check(lambda v: v >= 32, "an integer >= 32"))
    box_origin: Literal["upper-left", "lower-left"] = "lower-left"
    background: Literal["synthetic", "dicom"] = "synthetic"
    limit_train: int | None = field(default=None, metadata=POSITIVE_INT)
    limit_val: int | None = field(default=None, metadata=POSITIVE_INT)
    limit_test: int | None = field(default=None, metadata=POSITIVE_INT)
    per_task_limit: dict[str, int] = field(default_factory=dict)
    # The pixel spacing (mm) of images whose files do not state one (plain PNG / JPEG, DICOM without
    # PixelSpacing): measurement tasks need it and medzoo never assumes 1 mm (medzoo.data.medical).
    pixel_spacing_mm: float | None = field(default=None, metadata=POSITIVE)
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
    seed: int = field(default=0, metadata=NON_NEGATIVE_INT)
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
    engine: Literal["auto", "vllm", "hf"] = "auto"  # auto: medzoo.bench.plan.choose_engine
    prompts: list[Literal["none", "static", "adaptive"]] = field(default_factory=lambda: list(PROMPT_MODES))
    bertscore_model: str | None = None  # None = the offline all-MiniLM-L6-v2 from PyPI
    # vLLM engine: dtype ("auto": bf16 on CUDA, fp16 without bf16, float32 on CPU), context length
    # (None: what the longest prompt + images + max_new_tokens needs), GPU memory share, eager mode
    # (None: eager on CPU only).
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_model_len: int | None = field(default=None, metadata=POSITIVE_INT)
    gpu_memory_utilization: float | None = field(default=None, metadata=UNIT)
    enforce_eager: bool | None = None
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
    sampler_seed: int = field(default=0, metadata=NON_NEGATIVE_INT)
    pruner_startup_trials: int = field(default=5, metadata=NON_NEGATIVE_INT)
    pruner_warmup_steps: int = field(default=0, metadata=NON_NEGATIVE_INT)
    space: dict[str, ParamSpec] = field(default_factory=_guide_space)


@dataclass
class Recipe:
    name: str
    base: str  # "zoo:tiny-qwen2.5-vl", a Hub id ("google/medgemma-4b-it") or a local folder
    description: str = ""
    license: str = "apache-2.0"
    seed: int = field(default=0, metadata=NON_NEGATIVE_INT)  # zoo model seed
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
