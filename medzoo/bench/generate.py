"""Generation loops: one vLLM engine with LoRA requests, or one engine per model (vLLM merged / transformers)."""

from __future__ import annotations

import time
from pathlib import Path


def chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _requests(chunk: list[dict], adapter_labels: set[str]) -> list:
    """Engine requests for pending generations; a model label that names an adapter asks for it."""
    from medzoo.engines.base import Request

    return [
        Request(r["prompt"], r["images"], r["messages"], adapter=r["model"] if r["model"] in adapter_labels else None)
        for r in chunk
    ]


def _run_chunks(engine, todo, chunk_size, bar, on_chunk, timing, max_new_tokens, adapter_labels=frozenset()):
    for chunk in chunks(todo, chunk_size):
        t = time.perf_counter()
        texts = engine.generate(_requests(chunk, adapter_labels), max_new_tokens)
        timing["generate_s"] = timing.get("generate_s", 0.0) + time.perf_counter() - t
        on_chunk(chunk, texts)
        bar.update(len(chunk))


def generate_vllm_lora(ctx, pending, models, chunk_size, bar, on_chunk, timing):
    """Every configuration in ONE vLLM engine: the base model, adapters as LoRA requests."""
    from medzoo.engines.vllm_engine import VLLMEngine, lora_settings

    adapters = [m for m in models if m.adapter]
    settings = lora_settings({m.label: m.adapter for m in adapters}, ctx["family"], **ctx["engine"])
    t = time.perf_counter()
    engine = VLLMEngine.load(
        ctx["base_path"],
        ctx["stops"],
        settings,
        limit_images=ctx["max_images"],
        image_settings=ctx["image_settings"],
        adapters={m.label: m.adapter for m in adapters},
    )
    timing["engine_start_s"] = timing.get("engine_start_s", 0.0) + time.perf_counter() - t
    labels = {m.label for m in adapters}
    _run_chunks(engine, pending, chunk_size, bar, on_chunk, timing, ctx["max_new_tokens"], labels)
    engine.close()


def generate_per_model(ctx, pending, models, engine, chunk_size, bar, on_chunk, timing, merged_paths):
    """One model at a time: transformers (adapter applied with peft) or a vLLM engine per merged model."""
    from medzoo.engines.hf_engine import HFEngine
    from medzoo.engines.vllm_engine import VLLMEngine, VLLMSettings

    for m in models:
        todo = [r for r in pending if r["model"] == m.label]
        if not todo:
            continue
        t = time.perf_counter()
        if engine == "hf":
            loaded = HFEngine.load(ctx["base_path"], ctx["processor"], ctx["stops"], adapter=m.adapter, batch_size=16)
        else:
            loaded = VLLMEngine.load(
                merged_paths.get(m.label, ctx["base_path"]),
                ctx["stops"],
                VLLMSettings(**ctx["engine"]),
                limit_images=ctx["max_images"],
                image_settings=ctx["image_settings"],
            )
        timing["engine_start_s"] = timing.get("engine_start_s", 0.0) + time.perf_counter() - t
        _run_chunks(loaded, todo, chunk_size, bar, on_chunk, timing, ctx["max_new_tokens"])
        loaded.close()


def generate_openai(ctx, pending, models, chunk_size, bar, on_chunk, timing):
    """Every configuration through an OpenAI-compatible server (ctx["server"]: base_url, model, api_key)."""
    from medzoo.engines.openai_engine import OpenAIEngine

    server = ctx["server"]
    t = time.perf_counter()
    labels = [m.label for m in models]
    engine = OpenAIEngine.connect(server["base_url"], labels, server.get("model"), server.get("api_key"), ctx["stops"])
    timing["engine_start_s"] = timing.get("engine_start_s", 0.0) + time.perf_counter() - t
    adapter_labels = {m.label for m in models if m.adapter}
    _run_chunks(engine, pending, chunk_size, bar, on_chunk, timing, ctx["max_new_tokens"], adapter_labels)


def merge_for_vllm(recipe, models, log) -> dict[str, str]:
    from medzoo.merge import merge_for_recipe

    paths = {}
    for m in models:
        if m.adapter:
            own = Path(m.adapter).resolve() == (recipe.run_path() / "adapter").resolve()
            # The recipe's own adapter merges to <run_dir>/merged, where `medzoo merge` puts it (reused).
            dest = recipe.run_path() / "merged" if own else Path(m.adapter).with_name(Path(m.adapter).name + "-merged")
            merge_for_recipe(recipe, adapter=m.adapter, out=str(dest), log=log)
            paths[m.label] = str(dest)
    return paths


def bertscorer(model_type: str | None):
    """predictions, references -> per-example BERTScore F1 (the evaluate module, loaded once)."""
    from medzoo import metric_modules

    module = metric_modules.load("medzoo_bertscore")

    def score(preds, refs):
        return module.compute(predictions=preds, references=refs, model_type=model_type)["f1"]

    return score
