"""What a bench evaluates: the models (base, tuned, extra adapters) and how adapters are served."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medzoo.errors import InvalidValue, MissingState
from medzoo.run import RunDir, check_run_base

LORA_MODES = ("auto", "lora", "merged")


@dataclass(frozen=True)
class BenchModel:
    label: str  # "base", "tuned", or an adapter folder's name
    adapter: str | None = None  # None: the base model itself


def resolve_models(recipe, names: list[str], adapters: list[str]) -> list[BenchModel]:
    """`--models base,tuned` and `--adapter PATH ...` -> the models to evaluate."""
    from medzoo.adapters import read_adapter_config

    models: list[BenchModel] = []
    for name in names:
        if name == "base":
            models.append(BenchModel("base"))
        elif name == "tuned":
            if adapters:
                continue  # --adapter replaces the recipe's own adapter
            path = RunDir(recipe.run_path()).adapter
            if not (path / "adapter_config.json").exists():
                raise MissingState(
                    f"{path}: no trained adapter; run `medzoo train {recipe.name}` first, pass --adapter, or use --models base"
                )
            check_run_base(recipe, "bench")
            read_adapter_config(path)
            models.append(BenchModel("tuned", str(path)))
        else:
            raise InvalidValue(f"--models: expected base and/or tuned, got {name!r}")
    for i, a in enumerate(adapters):
        p = Path(a)
        if not (p / "adapter_config.json").exists():
            raise MissingState(f"--adapter {a}: not a peft adapter folder (no adapter_config.json)")
        read_adapter_config(p)
        label = "tuned" if len(adapters) == 1 else f"{p.parent.name if p.name == 'adapter' else p.name}-{i}"
        models.append(BenchModel(label, str(p)))
    if not models:
        raise InvalidValue("--models: nothing to evaluate")
    return models


def choose_lora_mode(
    requested: str, blockers: dict[str, str], on_cuda: bool = False, weight_bytes: int | None = None
) -> str:
    """'lora' (LoRARequest on one engine) or 'merged' (a merged copy per adapter, own engine).

    'auto': LoRA requests on CUDA (punica kernels) and for small models on CPU, where the second
    engine a merged copy needs costs more than LoRA's overhead (tiny Qwen2.5-VL, 1800 generations:
    benchmarks/bench_throughput.py). On CPU with weights >= 1 GB, merged: at Qwen2-VL-2B shape
    vLLM CPU generated ~4x slower with LoRA enabled (measured: 199.5 s vs 51 s). Adapters vLLM cannot serve force
    'merged', and the caller says so.
    """
    if requested not in LORA_MODES:
        raise InvalidValue(f"--lora-mode: expected one of {', '.join(LORA_MODES)}, got {requested!r}")
    if blockers:
        return "merged"
    if requested != "auto":
        return requested
    large = weight_bytes is None or weight_bytes >= 1 << 30  # unknown (a Hub id) counts as large
    return "merged" if (not on_cuda and large) else "lora"


def weight_bytes(model_path: str) -> int | None:
    """Size of a local model folder's safetensors (None for a Hub id not on disk)."""
    files = list(Path(model_path).glob("*.safetensors")) if Path(model_path).is_dir() else []
    return sum(f.stat().st_size for f in files) if files else None


def parallel_settings(recipe) -> dict:
    """The recipe's vLLM scaling settings (bench.tensor/pipeline/data_parallel_size)."""
    b = recipe.bench
    return {
        "tensor_parallel_size": b.tensor_parallel_size,
        "pipeline_parallel_size": b.pipeline_parallel_size,
        "data_parallel_size": b.data_parallel_size,
    }
