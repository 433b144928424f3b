"""`medzoo merge`: fold a LoRA/QLoRA adapter into its full-precision base, checked.

The base is always loaded in full precision (float32 here), never 4-bit: merging a QLoRA adapter
into a quantised base and saving it loses the quality users trained for (a common complaint).
The merged folder holds safetensors + processor + tokenizer + chat template + generation config,
so it loads with plain `AutoModelForImageTextToText` and in vLLM.

Before saving, the logits of base+adapter and of the merged model are compared on a few real
examples; a difference above `tolerance` is an error, not a warning.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from medzoo.adapters import adapter_digest  # merge.json names the adapter it merged by this
from medzoo.errors import MedzooError, MissingState

MERGE_INFO = "merge.json"


class MergeError(MedzooError, RuntimeError):
    pass


def adapter_vllm_blocker(adapter_dir: str | Path, family, model_path: str) -> str | None:
    """Why vLLM cannot serve this adapter as a LoRARequest on `model_path` (None if it can).

    vLLM's LoRA covers the language model's linear layers, and the vision tower and projector
    where the model class says `supports_tower_connector_lora` (vLLM 0.32: Gemma 3 and the three
    Qwen-VL families; medzoo.engines.vllm_engine.lora_settings turns it on). `modules_to_save`
    copies, or tower weights on a vLLM without that support, would be silently ignored, so such
    adapters are merged.
    """
    from medzoo.adapters import read_adapter_config, vision_lora_keys

    cfg = read_adapter_config(adapter_dir)
    if cfg.get("modules_to_save"):
        return f"it has modules_to_save ({', '.join(cfg['modules_to_save'])}), which vLLM LoRA does not load"
    vision = vision_lora_keys(adapter_dir, family)
    if vision:
        from medzoo.engines.vllm_engine import serves_tower_lora

        served, why = serves_tower_lora(model_path)
        if not served:
            return f"it has LoRA weights on the vision tower/projector (e.g. {vision[0]}), and {why}"
    return None


def verification_inputs(processor, prepared, n: int = 4) -> list[dict]:
    """Processor outputs for the first `n` prepared examples (one example per batch, no padding)."""
    return [
        processor(text=[p], images=[imgs], return_tensors="pt")
        for p, imgs in list(zip(prepared.prompts, prepared.images))[:n]
    ]


def _logits(model, inputs: list[dict]):
    import torch

    from medzoo.models.placement import to_model

    with torch.inference_mode():
        return [model(**to_model(x, model)).logits.float() for x in inputs]


def merge_tolerance(dtype: str, logits: list) -> float:
    """The largest |logit| difference merged vs base+adapter that is still rounding.

    float32: 1e-3 (measured ~5e-6). bf16/fp16 round W + BA to 8 / 11 mantissa bits (a step of 0.4%
    for bf16), and the rounding compounds over the layers: 5% of the largest |logit|. Measured at
    real size (MedGemma-4B's architecture, bf16, 34 layers, benchmarks/rehearse_real_size.py): 3.1%."""
    if dtype == "float32" or not logits:
        return 1e-3
    return 0.05 * max(float(x.abs().max()) for x in logits)


def merge(
    base_path: str,
    adapter_dir: str | Path,
    out: str | Path,
    processor,
    check_inputs: list[dict] | None = None,
    tolerance: float | None = None,
    dtype: str | None = None,
    force: bool = False,
    family=None,
    log=print,
) -> dict:
    """Merge `adapter_dir` into `base_path` and save to `out`; returns what was checked.

    Reuses `out` when it already holds a merge of the same base and adapter (by digest). `dtype`:
    the base's own (its config) unless given; `tolerance`: merge_tolerance's unless given.
    """
    from peft import PeftModel

    from medzoo.atomic import replace_dir, write_json
    from medzoo.models.loading import load_model

    out = Path(out)
    digest = adapter_digest(adapter_dir)
    dtype = merge_dtype(base_path, dtype)
    info_path = out / MERGE_INFO
    if info_path.exists() and not force:
        info = json.loads(info_path.read_text())
        if (info.get("adapter_digest"), info.get("base"), info.get("dtype")) == (digest, str(base_path), dtype):
            log(f"merge: reusing {out} (same base, adapter and dtype)")
            return info
    model = load_model(base_path, dtype=dtype)  # never 4-bit, also for a QLoRA adapter
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    before = _logits(model, check_inputs or [])
    tolerance = merge_tolerance(dtype, before) if tolerance is None else tolerance
    merged = model.merge_and_unload()
    after = _logits(merged, check_inputs or [])
    max_diff = max((float((a - b).abs().max()) for a, b in zip(before, after)), default=None)
    if max_diff is not None and max_diff > tolerance:
        raise MergeError(f"merged model's logits differ from base+adapter by {max_diff:.3g} (> {tolerance}); not saved")
    info = {
        "base": str(base_path),
        "adapter": str(adapter_dir),
        "adapter_digest": digest,
        "dtype": dtype,
        "checked_examples": len(check_inputs or []),
        "max_logit_diff": max_diff,
        "tolerance": tolerance,
    }
    with replace_dir(out) as tmp:
        _save_merged(merged, tmp, base_path, processor, family)
        write_json(tmp / MERGE_INFO, info)
    log(
        f"merge: wrote {out} (max |logit diff| {max_diff if max_diff is not None else 'n/a'} on {len(check_inputs or [])} examples)"
    )
    return info


def merge_dtype(base_path: str, requested: str | None = None) -> str:
    """The merged model's dtype: as asked, else the base's own (a bf16 Hub model stays bf16 and
    its merge the Hub base's size; the float32 zoo models stay float32), else the host's."""
    from medzoo.models.placement import config_dtype, resolve_dtype

    if requested not in (None, "auto"):
        return resolve_dtype(requested, field="--dtype")
    own = config_dtype(base_path)  # checked against the GPU too (bf16 on a T4: pass --dtype float32)
    return resolve_dtype(own, field=f"merge: the base's dtype ({base_path}; --dtype overrides it)")


def _save_merged(merged, folder: Path, base_path: str, processor, family) -> None:
    """The merged weights plus everything a loader and llama.cpp's converter read from the folder."""
    merged.save_pretrained(str(folder), safe_serialization=True)
    # transformers 5 saves fast tokenizers as tokenizer.json only; keep the base's SentencePiece
    # model too: llama.cpp's converter reads Gemma's vocabulary from it (a BPE tokenizer.json
    # from a locally trained tokenizer fails its pre-tokenizer check).
    from medzoo.models.loading import base_file

    for name in family.converter_files if family is not None else ():
        src = base_file(base_path, name)  # a local folder's, or the Hub base's (its cache or a download)
        if src is not None and not (folder / name).exists():
            shutil.copy2(src, folder / name)
    if family is not None and family.after_save is not None:
        family.after_save(folder)  # e.g. Gemma 3's vision tower in the Hub layout llama.cpp expects
    processor.save_pretrained(str(folder))
    write_added_tokens_decoder(folder, processor.tokenizer)
    if getattr(merged, "generation_config", None) is not None:
        merged.generation_config.save_pretrained(str(folder))


def write_added_tokens_decoder(folder: Path, tokenizer) -> None:
    """Put `added_tokens_decoder` back into tokenizer_config.json.

    transformers 5 keeps added tokens in tokenizer.json only; llama.cpp's converter reads a
    SentencePiece vocabulary (Gemma) from tokenizer.model and learns which tokens are special
    from tokenizer_config.json alone. Without it `<start_of_turn>` became an ordinary word that
    llama.cpp spelled out letter by letter: garbled answers from the GGUF (10% agreement, measured)."""
    from medzoo.atomic import write_json

    path = Path(folder) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    if config.get("added_tokens_decoder"):
        return
    config["added_tokens_decoder"] = {
        str(i): {
            "content": t.content,
            "lstrip": t.lstrip,
            "normalized": t.normalized,
            "rstrip": t.rstrip,
            "single_word": t.single_word,
            "special": t.special,
        }
        for i, t in sorted(tokenizer.added_tokens_decoder.items())
    }
    write_json(path, config)


def merge_for_recipe(
    recipe,
    adapter: str | None = None,
    out: str | None = None,
    n_check: int = 4,
    force: bool = False,
    dtype: str | None = None,
    log=print,
) -> dict:
    """`medzoo merge RECIPE`: the recipe's trained adapter (or `adapter`) into `<run_dir>/merged`."""
    from medzoo.data.sources import first_rows
    from medzoo.inference import prepare
    from medzoo.models.loading import recipe_base
    from medzoo.recipe import prompt_settings
    from medzoo.run import open_run, prompts_source

    adapter_dir = Path(adapter) if adapter else recipe.run_path() / "adapter"
    if not (adapter_dir / "adapter_config.json").exists():
        raise MissingState(
            f"{adapter_dir}: no trained adapter; run `medzoo train {recipe.name}` first or pass --adapter"
        )
    trained = None if adapter else open_run(recipe, "merge")
    base = recipe_base(recipe)
    _, rows = first_rows(recipe.data, recipe.bench.split, n_check)
    if trained:
        trained.check_image_settings(base.image_settings, "merge")
    source = prompts_source(recipe, trained)  # the prompts the adapter was trained with
    prepared = prepare(
        rows, base.processor, base.family, prompt_settings(source), source.prompts.train_mode, base.image_settings
    )
    out_dir = Path(out) if out else recipe.run_path() / "merged"
    checks = verification_inputs(base.processor, prepared, n_check)
    return merge(
        base.path, adapter_dir, out_dir, base.processor, checks, dtype=dtype, force=force, family=base.family, log=log
    )
