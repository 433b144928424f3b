"""GPU check: real-size LoRA / QLoRA training, merge and generation for the seed recipes' bases.

For each base (random weights at real size, built from medzoo's kept configs in
medzoo/models/configs, nothing downloaded) with its seed recipe's adapter and training settings:

1. LoRA bf16: the model built on the GPU, medzoo's `attach_adapter` (LoRA from `lora_config`,
   gradient checkpointing as the recipe says), N AdamW steps at the recipe's lr and batch size on a
   synthetic batch of one image per example (MedGemma 896 px = 256 image tokens; Qwen2.5-VL at the
   recipe's max_pixels, 448 px = 256 tokens) through medzoo's `answer_only_loss`: peak allocated
   and reserved memory, step times.
2. QLoRA nf4: the same weights saved once as safetensors and reloaded with medzoo's
   `base_training_kwargs` (nf4, double quantisation) and `attach_adapter` (the base frozen, its
   full-precision modules left in bf16) + LoRA, the same steps: peak memory, step times, and QLoRA/LoRA training peak (goal <= 0.45).
3. merge: `medzoo.merge.merge` of the LoRA adapter saved in (1) into the saved base: time, dtype of
   the merged safetensors, size on disk, the logit check merge() does itself.
4. generation: `model.generate` of 16 new tokens for a batch of 4 prompts, greedy as medzoo's
   engines decode (`greedy_generation_config`): time and tokens/s.

Per model the order is: build, save the base, generate, LoRA, QLoRA, merge (generation on the plain
base before LoRA wraps it; each peak measured after the previous stage's tensors are released).
Also medzoo's own memory estimate (medzoo.models.sizing) next to each measured peak, wall time
per stage, the versions of torch / transformers / peft / bitsandbytes and the GPU's name. Prints
one JSON object and writes it to --out (default $OUT/gpu_check.json when $OUT is set), rewritten
after every stage so a run cut short still leaves what it measured.

On the device machine (one H100), from the repository root, with the bitsandbytes wheel in wheels/
(untracked and not git-ignored, so it travels with the tree):

    python benchmarks/gpu_check.py --wheels wheels

Expected to take about 5-7 minutes for both models (an estimate, not yet measured: most of it is
writing and reading the 8.6 and 16.6 GB bf16 checkpoints); stages not started by --budget-s
(450 s) are skipped and say so. `--workdir /dev/shm/gpu-check` makes the disk part faster where
/dev/shm holds 35 GB, at the price of merge times that do not include a real disk.

Needs torch with CUDA, transformers 5.x, peft, accelerate; no network, no vLLM. bitsandbytes for
QLoRA: when it is not installed, a `bitsandbytes-*.whl` under --wheels is `pip install --no-deps`ed
first (e.g. bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl, 41 MiB); without either, QLoRA
is skipped with a line saying so. Disk: the saved base and its merged copy, one model at a time
(2 x 16.6 GB for Qwen2.5-VL-7B) under --workdir, removed after each model.

Tested on CPU with scaled-down configs (2 layers, hidden 256, vision depth 2, vocab 1024):

    .venv/bin/python benchmarks/gpu_check.py --small --device cpu
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

# The device machine has no network: without this, base_config's Hub lookup would wait out its
# connection retries before falling back to medzoo's kept copy of the config.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Loading/saving progress bars would fill the few KB of output a device run hands back.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Run from the repository root without installing medzoo (the device machine gets only the tree).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
START = time.perf_counter()  # --budget-s counts from here: the device's limit covers imports too


@dataclass(frozen=True)
class Case:
    recipe: str
    prompt_tokens: int  # text before the image (system prompt, question, chat markup)
    answer_tokens: int  # tokens that carry the loss


# Text lengths like the recipes' data: Kvasir-VQA asks short questions with short answers;
# MedVision prompts state the task, the pixel size and a format requirement, answers are numbers/boxes.
CASES = {
    "medgemma": Case("medgemma-kvasir-vqa", prompt_tokens=48, answer_tokens=8),
    "qwen25vl-7b": Case("medvision-qwen25vl-mixed", prompt_tokens=160, answer_tokens=24),
}
STAGES = ("generate", "lora", "qlora", "merge")
QLORA_RATIO_GOAL = 0.45
GEN_BATCH, GEN_TOKENS = 4, 16
GIB = 2**30

# --small: every size that sets the cost scaled down, token ids moved below the small vocabulary.
SMALL_TEXT = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": 1024,
}
SMALL_GEMMA = {
    "text": {
        "query_pre_attn_scalar": 64,
        "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"],
    },
    "vision": {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 224,
    },
    "top": {"mm_tokens_per_image": 64},  # 16 x 16 patches pooled 2 x 2
}
SMALL_QWEN = {
    "text": {},
    "vision": {
        "depth": 2,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_heads": 2,
        "out_hidden_size": 256,
        "fullatt_block_indexes": [1],
        "window_size": 112,
    },
    "top": {},
}
SMALL_QWEN_SIDE = 224  # 16 x 16 patches -> 64 image tokens
TOKEN_ID_FIELDS = (
    "image_token_index",
    "image_token_id",
    "boi_token_index",
    "eoi_token_index",
    "vision_start_token_id",
    "vision_end_token_id",
    "vision_token_id",
    "video_token_id",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- bitsandbytes from a carried wheel


def ensure_bitsandbytes(wheels: Path, workdir: Path) -> dict:
    """bitsandbytes importable, installed from a wheel under `wheels` if needed. Must run before
    transformers is imported: it caches whether bitsandbytes is available on first ask."""
    import importlib

    try:
        import bitsandbytes

        return {"version": bitsandbytes.__version__, "installed_from": None}
    except Exception as e:  # noqa: BLE001 - a broken CUDA library raises more than ImportError
        missing = f"{type(e).__name__}: {e}"
    found = sorted(wheels.glob("**/bitsandbytes-*.whl")) if wheels.is_dir() else []
    if not found:
        return {"version": None, "error": f"not installed ({missing}) and no bitsandbytes-*.whl under {wheels}"}
    wheel = found[-1]
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"} | {"PIP_CONFIG_FILE": os.devnull}
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet"]
    proc = subprocess.run([*pip, str(wheel)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:  # a read-only site-packages: install beside the run instead
        target = workdir / "site-packages"
        proc = subprocess.run([*pip, "--target", str(target), str(wheel)], capture_output=True, text=True, env=env)
        sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        import bitsandbytes

        return {"version": bitsandbytes.__version__, "installed_from": str(wheel)}
    except Exception as e:  # noqa: BLE001
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return {"version": None, "error": f"installing {wheel.name} did not help: {e} {tail[0]}".strip()}


# ---------------------------------------------------------------- configs and synthetic batches


def load_case(name: str, small: bool):
    """The seed recipe, its base's config (medzoo's kept copy offline) and family."""
    from medzoo.models.registry import family_for_model_type
    from medzoo.models.sizing import base_config
    from medzoo.recipe import load_recipe

    recipe = load_recipe(CASES[name].recipe)
    config, source = base_config(recipe.base)
    family = family_for_model_type(config.model_type)
    if small:
        shrink(config)
    return recipe, config, source, family


def shrink(config) -> None:
    """Scale a real config down in place, keeping its architecture and its token ids in the vocab."""
    from medzoo.models.sizing import text_config

    parts = SMALL_GEMMA if getattr(config, "mm_tokens_per_image", None) else SMALL_QWEN
    tc = text_config(config)
    for key, value in {**SMALL_TEXT, **parts["text"]}.items():
        setattr(tc, key, value)
    for key, value in parts["vision"].items():
        setattr(config.vision_config, key, value)
    for key, value in parts["top"].items():
        setattr(config, key, value)
    if len(getattr(tc, "layer_types", None) or []) != tc.num_hidden_layers:  # Qwen: one per real layer
        tc.layer_types = tc.layer_types[: tc.num_hidden_layers]
    rope = getattr(tc, "rope_parameters", None) or {}
    if "mrope_section" in rope:  # must sum to head_dim / 2, in Qwen's 2:3:3 ratio
        rope["mrope_section"] = [8, 12, 12]
    remap_token_ids(config, tc, SMALL_TEXT["vocab_size"])


def remap_token_ids(config, tc, vocab: int) -> None:
    """Move special token ids at or above `vocab` to the top of the small vocabulary (same old id,
    same new id, so e.g. Gemma's image_token_id alias and image_token_index stay equal)."""
    moved: dict[int, int] = {}

    def new(i):
        if isinstance(i, list):
            return [new(x) for x in i]
        if isinstance(i, int) and i >= vocab:
            moved.setdefault(i, vocab - 32 + len(moved))
            return moved[i]
        return i

    for cfg in (config, tc):
        for key in TOKEN_ID_FIELDS:
            if getattr(cfg, key, None) is not None:
                setattr(cfg, key, new(getattr(cfg, key)))


def special_ids(config) -> dict:
    """The image-related token ids the model's forward looks for (and that text must avoid)."""
    if getattr(config, "mm_tokens_per_image", None):
        return {"open": config.boi_token_index, "image": config.image_token_index, "close": config.eoi_token_index}
    return {"open": config.vision_start_token_id, "image": config.image_token_id, "close": config.vision_end_token_id}


def image_inputs(config, recipe, batch: int, small: bool) -> tuple[dict, int, str]:
    """Pixel inputs for `batch` images at the recipe's size and the image tokens each becomes.

    Through the family's own image processor (constructed in code, nothing to download) from random
    photos; random tensors of the same shape if it cannot be constructed."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)

    def photos(side: int) -> list:
        return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(batch)]

    vc = config.vision_config
    if getattr(config, "mm_tokens_per_image", None):  # Gemma 3: a fixed square, a fixed token count
        side = vc.image_size if small else (recipe.image.image_size or vc.image_size)
        try:
            from transformers import Gemma3ImageProcessor

            ip = Gemma3ImageProcessor(size={"height": side, "width": side})
            # 600 px: not the model's size, so the resize runs as for a real photo.
            pixels = {"pixel_values": ip(images=photos(600), return_tensors="pt")["pixel_values"]}
            how = f"{type(ip).__name__} {side}x{side}"
        except Exception as e:  # noqa: BLE001
            pixels, how = {"pixel_values": torch.randn(batch, 3, side, side).clamp(-1, 1)}, f"random tensor ({e})"
        return pixels, int(config.mm_tokens_per_image), how
    # Qwen-VL: the recipe's max_pixels as a square image (448 px for the MedVision recipes).
    side = SMALL_QWEN_SIDE if small else int((recipe.image.max_pixels or 1003520) ** 0.5)
    merge, patch, temporal = vc.spatial_merge_size, vc.patch_size, vc.temporal_patch_size
    side -= side % (patch * merge)
    try:
        from transformers.models.qwen2_vl import Qwen2VLImageProcessor

        size = {"shortest_edge": side * side, "longest_edge": side * side}
        ip = Qwen2VLImageProcessor(size=size, patch_size=patch, merge_size=merge, temporal_patch_size=temporal)
        # At the recipe's size already (MedVision's images are 448 px): a larger photo is shrunk by
        # smart_resize, whose floor can land one patch row short (600 -> 420 px, not 448).
        out = ip(images=photos(side), return_tensors="pt")
        pixels = {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
        how = f"{type(ip).__name__} {side}x{side}"
    except Exception as e:  # noqa: BLE001
        g = side // patch
        pixels = {
            "pixel_values": torch.randn(batch * g * g, 3 * temporal * patch * patch),
            "image_grid_thw": torch.tensor([[1, g, g]] * batch),
        }
        how = f"random tensor ({e})"
    tokens = int(pixels["image_grid_thw"][0].prod()) // (merge * merge)
    return pixels, tokens, how


def synthetic_batch(config, case: Case, pixels: dict, image_tokens: int, batch: int, with_answer: bool) -> dict:
    """input_ids = prompt text, one image block, more text, then the answer (labels on it only).

    Text ids are random below every special id, so no text token is taken for an image token."""
    import torch

    ids = special_ids(config)
    text_hi = min(v for v in ids.values())
    g = torch.Generator().manual_seed(0)

    def text(n):
        return torch.randint(10, text_hi, (batch, n), generator=g)

    image = torch.tensor([ids["open"], *[ids["image"]] * image_tokens, ids["close"]]).expand(batch, -1)
    parts = [text(case.prompt_tokens), image, text(8)]  # 8: the question after the image, chat markup
    answer = text(case.answer_tokens + 1)  # + the end-of-turn token, which carries loss too
    input_ids = torch.cat([*parts, answer] if with_answer else parts, dim=1)
    out = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), **pixels}
    if getattr(config, "mm_tokens_per_image", None):  # Gemma 3's processor marks image positions
        out["token_type_ids"] = (input_ids == ids["image"]).long()
    if with_answer:
        labels = torch.full_like(input_ids, -100)
        labels[:, -answer.shape[1] :] = answer
        out["labels"] = labels
    return out


def on_device(batch: dict, device: str, dtype) -> dict:
    import torch

    return {
        k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
        for k, v in batch.items()
    }


# ---------------------------------------------------------------- measuring


class Meter:
    """Wall time and, on CUDA, the allocator's peak since start()."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"

    def start(self) -> Meter:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        return self

    def stop(self) -> dict:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        out = {"seconds": round(time.perf_counter() - self.t0, 2)}
        if self.cuda:
            out["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
            out["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
        return out


def release(device: str) -> None:
    """Give the previous stage's tensors back so the next peak is its own."""
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def param_gib_by_dtype(model) -> dict:
    """Parameter memory by dtype (nf4 weights show as uint8): says what a peak is made of."""
    sizes: dict[str, float] = {}
    for p in {id(p): p for p in model.parameters()}.values():
        key = str(p.dtype).removeprefix("torch.")
        sizes[key] = sizes.get(key, 0) + p.numel() * p.element_size() / GIB
    return {k: round(v, 3) for k, v in sorted(sizes.items())}


def folder_gib(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / GIB, 2)


def safetensors_dtypes(folder: Path) -> dict:
    """Tensor count per dtype, from the safetensors headers (what was saved, not what config says)."""
    counts: dict[str, int] = {}
    for f in folder.glob("*.safetensors"):
        with f.open("rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        for key, t in header.items():
            if key != "__metadata__":
                counts[t["dtype"]] = counts.get(t["dtype"], 0) + 1
    return counts


# ---------------------------------------------------------------- stages


@dataclass
class Ctx:
    """What every stage of one model reads."""

    recipe: object
    family: object
    device: str
    dtype: object  # torch dtype of the weights: bf16 on CUDA, float32 on CPU
    steps: int


def stage_build(config, device: str, dtype) -> dict:
    """Real-size model with random weights, allocated and initialised on `device` directly (on a GPU
    the init kernels take seconds; built on the CPU first, a 7B model would take minutes to move)."""
    import torch
    from transformers import AutoModelForImageTextToText

    meter = Meter(device).start()
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    return {**meter.stop(), "params_gib_by_dtype": param_gib_by_dtype(model), "model": model}


def autocast(device: str, dtype):
    """As the Trainer does with train.precision bf16: autocast around forward and loss."""
    import contextlib

    import torch

    if device == "cuda" and dtype != torch.float32:
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def make_optimizer(model, train, device: str):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    # adamw_torch_fused as torch's fused AdamW; the 8-bit optimizers the schema allows are not measured.
    fused = train.optimizer == "adamw_torch_fused" and device == "cuda"
    return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, fused=fused), params


def train_steps(ctx: Ctx, model, batch: dict) -> dict:
    """ctx.steps optimiser steps through medzoo's answer_only_loss: per-step times and losses."""
    import torch

    from medzoo.train.trainer import answer_only_loss

    train, device = ctx.recipe.train, ctx.device
    opt, params = make_optimizer(model, train, device)
    model.train()
    times, losses = [], []
    for _ in range(ctx.steps):
        t0 = time.perf_counter()
        with autocast(device, ctx.dtype):
            loss = answer_only_loss(model, {**batch, "use_cache": False})
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(round(time.perf_counter() - t0, 3))
        losses.append(round(loss.item(), 4))
    return {
        "step_seconds": times,
        "median_step_seconds": statistics.median(times),
        "losses": losses,
        "samples_per_second": round(batch["input_ids"].shape[0] / statistics.median(times), 2),
    }


def stage_generate(model, batch: dict, device: str) -> dict:
    """Greedy generation of GEN_TOKENS for GEN_BATCH prompts, after a 2-token warm-up (CUDA
    kernels, caches); min_new_tokens so a random model's early end-of-turn cannot shorten it."""
    import torch

    from medzoo.models.loading import greedy_generation_config

    greedy_generation_config(model)
    model.eval()
    kwargs = dict(do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        model.generate(**batch, max_new_tokens=2, min_new_tokens=2, **kwargs)
        meter = Meter(device).start()
        out = model.generate(**batch, max_new_tokens=GEN_TOKENS, min_new_tokens=GEN_TOKENS, **kwargs)
        result = meter.stop()
    new = (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
    return {
        **result,
        "batch": out.shape[0],
        "prompt_tokens": batch["input_ids"].shape[1],
        "new_tokens": new,
        "tokens_per_second": round(new / result["seconds"], 1),
    }


def stage_lora(ctx: Ctx, model, batch: dict, adapter_dir: Path) -> dict:
    """LoRA on the model already on the device, in its dtype; saves the adapter for the merge stage."""
    from medzoo.adapters import attach_adapter, trainable_parameters

    spec = replace(ctx.recipe.adapter, method="lora")  # the seed recipes say qlora; this is the bf16 twin
    meter = Meter(ctx.device).start()
    model = attach_adapter(model, ctx.family, spec, ctx.recipe.train.gradient_checkpointing)
    result = train_steps(ctx, model, batch)
    trainable, total = trainable_parameters(model)
    model.save_pretrained(str(adapter_dir))
    return {**meter.stop(), **result, "trainable": trainable, "parameters": total, "model": model}


def stage_qlora(ctx: Ctx, base_dir: Path, batch: dict) -> dict:
    """Reload the saved weights in nf4 as medzoo does for a QLoRA recipe, then the same steps.
    Load (quantising, peft's fp32 upcast) and training are measured apart."""
    from transformers import AutoModelForImageTextToText

    from medzoo.adapters import attach_adapter, base_training_kwargs, disable_cpu_repacking

    spec = replace(ctx.recipe.adapter, method="qlora")
    on_cuda = ctx.device == "cuda"
    load = Meter(ctx.device).start()
    kwargs = base_training_kwargs(ctx.family, spec, "bf16" if on_cuda else "fp32", on_cuda=on_cuda)
    model = AutoModelForImageTextToText.from_pretrained(str(base_dir), **kwargs)
    disable_cpu_repacking(model)
    model = attach_adapter(model, ctx.family, spec, ctx.recipe.train.gradient_checkpointing)
    loaded = {**load.stop(), "params_gib_by_dtype": param_gib_by_dtype(model)}
    release(ctx.device)
    meter = Meter(ctx.device).start()
    result = train_steps(ctx, model, batch)
    del model
    return {**meter.stop(), **result, "load": loaded}


class StandInProcessor:
    """merge() saves a processor next to the weights; no real tokenizer is available offline, so a
    two-word tokenizer stands in (a few KB: the timing and the weights are what is measured)."""

    def __init__(self):
        from tokenizers import Tokenizer, models
        from transformers import PreTrainedTokenizerFast

        core = Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, unk_token="<unk>"))
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>")

    def save_pretrained(self, folder: str) -> None:
        self.tokenizer.save_pretrained(folder)


def stage_merge(base_dir: Path, adapter_dir: Path, out_dir: Path, family, check: dict) -> dict:
    """medzoo's merge: base (its saved dtype) + adapter on the device, logits checked, saved.

    Should the logit check refuse the merge (random weights are not what it was tuned on), that is
    recorded and the merge run again unchecked, so its time, dtype and size are still measured."""
    from medzoo.merge import MergeError, merge

    device = "cuda" if check["input_ids"].is_cuda else "cpu"
    meter, refused = Meter(device).start(), None
    try:
        info = merge(str(base_dir), adapter_dir, out_dir, StandInProcessor(), [check], family=family, log=log)
    except MergeError as e:
        refused = {"check_refused": str(e), "refused_after_seconds": meter.stop()["seconds"]}
    if refused:  # outside the except block: its traceback would keep the first merged model alive
        release(device)
        meter.start()
        info = merge(str(base_dir), adapter_dir, out_dir, StandInProcessor(), [], family=family, log=log)
    return {
        **meter.stop(),
        "dtype": info["dtype"],
        "saved_tensor_dtypes": safetensors_dtypes(out_dir),
        "size_gib": folder_gib(out_dir),
        "base_size_gib": folder_gib(base_dir),
        "max_logit_diff": info["max_logit_diff"],
        "tolerance": info["tolerance"],
        **(refused or {}),
    }


# ---------------------------------------------------------------- one model, all stages


class Run:
    """Results of the whole check, written to --out after every stage."""

    def __init__(self, args, header: dict):
        self.args, self.data, self.t0 = args, {**header, "models": {}}, START

    def over_budget(self) -> bool:
        return time.perf_counter() - self.t0 > self.args.budget_s

    def save(self) -> None:
        self.data["wall_seconds"] = round(time.perf_counter() - self.t0, 1)
        if self.args.out:
            Path(self.args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(self.args.out).write_text(json.dumps(self.data, indent=2) + "\n")

    def stage(self, model_out: dict, name: str, fn, *a, **kw) -> dict:
        """Run one stage: its figures, or its error (the other stages still run), or why skipped."""
        if self.over_budget():
            model_out["stages"][name] = {"skipped": f"time budget ({self.args.budget_s} s) spent"}
            log(f"{name}: skipped, time budget spent")
            return {}
        log(f"{name}: start")
        t0 = time.perf_counter()
        try:
            result = fn(*a, **kw)
        except Exception as e:  # noqa: BLE001 - one failed stage must not lose the others' figures
            traceback.print_exc()
            result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]}
        shown = {k: v for k, v in result.items() if k != "model"}
        model_out["stages"][name] = {**shown, "stage_wall_seconds": round(time.perf_counter() - t0, 2)}
        log(f"{name}: {json.dumps(model_out['stages'][name])}")
        self.save()
        return result


def check_model(run: Run, name: str, bnb: dict) -> None:
    import torch

    t0, args = time.perf_counter(), run.args
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    recipe, config, source, family = load_case(name, args.small)
    ctx = Ctx(recipe, family, args.device, dtype, args.steps)
    out = run.data["models"][name] = {"recipe": recipe.name, "base": recipe.base, "config": source, "stages": {}}
    train_batch, gen_batch = describe(out, ctx, config, CASES[name], args.small)
    work = Path(args.workdir) / name
    shutil.rmtree(work, ignore_errors=True)
    base_dir, adapter_dir = work / "base", work / "adapter"
    want = set(args.stages)

    built = run.stage(out, "build", stage_build, config, ctx.device, dtype)
    model = built.get("model")
    if model is None:
        return
    if want & {"qlora", "merge"}:  # both read the base from disk; saved before LoRA changes its modules
        run.stage(out, "save_base", save_base, model, base_dir)
    if "generate" in want:
        run.stage(out, "generate", stage_generate, model, gen_batch, ctx.device)
    if want & {"lora", "merge"}:  # merge merges the LoRA stage's adapter
        release(ctx.device)
        run.stage(out, "lora", stage_lora, ctx, model, train_batch, adapter_dir)
    del model, built  # the LoRA model too: the QLoRA peak must not include it
    release(ctx.device)
    if "qlora" in want:
        qlora_stage(run, out, ctx, bnb, base_dir, train_batch)
    if "merge" in want and (adapter_dir / "adapter_config.json").exists():
        run.stage(out, "merge", stage_merge, base_dir, adapter_dir, work / "merged", family, one_example(train_batch))
        release(ctx.device)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    run.save()


def describe(out: dict, ctx: Ctx, config, case: Case, small: bool) -> tuple[dict, dict]:
    """The training and generation batches on the device, and what they and medzoo's estimate are."""
    from medzoo.models.sizing import size_report

    recipe, batch = ctx.recipe, ctx.recipe.train.batch_size
    pixels, image_tokens, how = image_inputs(config, recipe, batch, small)
    train_batch = synthetic_batch(config, case, pixels, image_tokens, batch, with_answer=True)
    gen_pixels = image_inputs(config, recipe, GEN_BATCH, small)[0]
    gen_batch = synthetic_batch(config, case, gen_pixels, image_tokens, GEN_BATCH, with_answer=False)
    tokens = train_batch["input_ids"].shape[1]
    gc_on = recipe.train.gradient_checkpointing
    est = size_report(config, ctx.family, recipe.adapter, batch, tokens, gc_on)
    out.update(
        family=ctx.family.name,
        adapter={"r": recipe.adapter.r, "alpha": recipe.adapter.alpha, "targets": recipe.adapter.target_modules},
        train={
            "lr": recipe.train.lr,
            "batch_size": batch,
            "optimizer": recipe.train.optimizer,
            "gradient_checkpointing": gc_on,
            "steps": ctx.steps,
        },
        sequence={
            "tokens": tokens,
            "image_tokens": image_tokens,
            "answer_tokens": case.answer_tokens + 1,
            "pixels": how,
        },
        parameters=est.parameters,
        estimate_gib=est.memory_gib,  # medzoo.models.sizing's arithmetic, for comparison with the peaks
    )
    return on_device(train_batch, ctx.device, ctx.dtype), on_device(gen_batch, ctx.device, ctx.dtype)


def save_base(model, folder: Path) -> dict:
    model.save_pretrained(str(folder))
    return {"size_gib": folder_gib(folder)}


def qlora_stage(run: Run, out: dict, ctx: Ctx, bnb: dict, base_dir: Path, batch: dict) -> None:
    """QLoRA when bitsandbytes imports, and its training peak over LoRA's."""
    if bnb.get("version") is None:
        out["stages"]["qlora"] = {"skipped": f"bitsandbytes unavailable: {bnb.get('error')}"}
        log(f"qlora: SKIPPED, bitsandbytes unavailable: {bnb.get('error')}")
        return
    if not (base_dir / "config.json").exists():
        out["stages"]["qlora"] = {"skipped": "the base was not saved (see save_base)"}
        return
    qlora = run.stage(out, "qlora", stage_qlora, ctx, base_dir, batch)
    release(ctx.device)
    lora_peak = out["stages"].get("lora", {}).get("peak_allocated_gib")
    if lora_peak and qlora.get("peak_allocated_gib"):
        ratio = round(qlora["peak_allocated_gib"] / lora_peak, 3)
        out["qlora_lora_peak_ratio"] = {"ratio": ratio, "goal": QLORA_RATIO_GOAL, "met": ratio <= QLORA_RATIO_GOAL}


def one_example(batch: dict) -> dict:
    """The first example of a batch, for merge()'s logit check (Qwen's pixels are per patch, so the
    first image's rows are the first grid's t*h*w)."""
    check = {k: v[:1] for k, v in batch.items() if k != "labels"}
    if "image_grid_thw" in batch:
        check["pixel_values"] = batch["pixel_values"][: int(batch["image_grid_thw"][0].prod())]
    return check


# ---------------------------------------------------------------- main


def versions(bnb: dict, device: str) -> dict:
    import accelerate
    import peft
    import torch
    import transformers

    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "bitsandbytes": bnb,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / GIB, 1))
    return info


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="medgemma,qwen25vl-7b", help=f"comma-separated, from {', '.join(CASES)}")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {', '.join(STAGES)}")
    ap.add_argument("--steps", type=int, default=3, help="optimiser steps per training stage")
    ap.add_argument("--small", action="store_true", help="scaled-down configs, to test this script on a CPU")
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    ap.add_argument("--wheels", default="wheels", help="folder searched for a bitsandbytes-*.whl")
    ap.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "medzoo-gpu-check"))
    ap.add_argument(
        "--out", default=os.path.join(os.environ["OUT"], "gpu_check.json") if os.environ.get("OUT") else None
    )
    ap.add_argument("--budget-s", type=float, default=450, help="start no stage after this many seconds")
    ap.add_argument("--keep", action="store_true", help="keep the saved base, adapter and merged folders")
    args = ap.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.stages = [s for s in args.stages.split(",") if s]
    bad = [m for m in args.models if m not in CASES] + [s for s in args.stages if s not in STAGES]
    if bad:
        ap.error(f"unknown: {', '.join(bad)}")
    return args


def main() -> None:
    args = parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    bnb = ensure_bitsandbytes(Path(args.wheels), Path(args.workdir))  # before transformers is imported
    if bnb["version"] is None:
        log(f"QLoRA will be skipped: bitsandbytes unavailable ({bnb['error']})")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    header = {"device": args.device, "small": args.small, "workdir": args.workdir}
    run = Run(args, {**header, "versions": versions(bnb, args.device)})
    for name in args.models:
        try:
            check_model(run, name, bnb)
        except Exception as e:  # noqa: BLE001 - the next model still runs
            traceback.print_exc()
            run.data["models"].setdefault(name, {})["error"] = f"{type(e).__name__}: {e}"[:500]
        release(args.device)
    run.save()
    print(json.dumps(run.data, indent=2))
    failed = [f"{m}.{s}" for m, r in run.data["models"].items() for s, v in r.get("stages", {}).items() if "error" in v]
    failed += [m for m, r in run.data["models"].items() if "error" in r]
    if failed:
        log(f"failed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
