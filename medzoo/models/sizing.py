"""Real sizes without the weights: a base's architecture built on the meta device from its config.

`medzoo train RECIPE --dry-run` uses it to say, before anything is downloaded, how many parameters
the base has, how many the adapter trains, which modules QLoRA keeps in full precision, and about how
much GPU memory LoRA and QLoRA need at the recipe's batch and sequence length. The config is the
base's own (a local folder or the Hugging Face cache), else the copy medzoo keeps for the seed
recipes' bases in medzoo/models/configs (the Hub's config.json; MedGemma's rebuilt from Gemma 3 4B's
published values, and each checked: built here, the parameter count equals the Hub's safetensors
count, e.g. 4,300,079,472 for MedGemma 4B and 8,292,166,656 for Qwen2.5-VL-7B).

The memory estimate is arithmetic, stated so it can be checked:
- weights: LoRA in the training dtype (2 bytes in bf16); QLoRA nf4 with double quantisation is
  4.127 bits per quantised weight (4 bits + an fp8 absmax per 64 + fp32 per 256 of those), the
  modules it keeps (vision tower, projector, LM head, embeddings, norms) in the training dtype;
- the adapter: fp32 weights, gradients and Adam's two moments, 16 bytes per trainable parameter;
- activations of the language model in 16 bits, with flash/SDPA attention (no length^2 term):
  ~34 x hidden bytes per token per layer to backpropagate through (Korthikanti et al. 2022);
  with gradient checkpointing 2 x hidden per token per layer kept plus one layer recomputed;
- logits only at answer positions (medzoo's loss asks the model for those alone), neglected;
- 1 GiB of CUDA context and allocator slack.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

KEPT_CONFIGS = Path(__file__).parent / "configs"
NF4_BYTES = 4.127 / 8
CUDA_OVERHEAD = 2**30
ACTIVATION_FACTOR = 34  # bytes per hidden unit per token per layer, 16-bit, no attention matrix


def kept_config_path(base: str) -> Path | None:
    path = KEPT_CONFIGS / f"{base.replace('/', '--')}.json"
    return path if path.exists() else None


def base_config(base: str):
    """The base's config: its own where it is on disk (folder or Hub cache), else medzoo's copy."""
    from transformers import AutoConfig

    from medzoo.models.loading import is_local_path, model_type_of

    if is_local_path(base):
        model_type_of(base)  # a local folder without a usable config.json: one line, not transformers' error
    try:
        return AutoConfig.from_pretrained(base), "its config.json"
    except OSError as e:
        kept = kept_config_path(base)
        if kept is None:
            from medzoo.errors import MissingState
            from medzoo.models.loading import hub_unavailable_reason

            raise MissingState(f"base: {base}: {hub_unavailable_reason(e)}; medzoo keeps no config for it") from e
        data = json.loads(kept.read_text())
        return AutoConfig.for_model(data.pop("model_type"), **data), f"medzoo's copy of its Hub config ({kept.name})"


def meta_model(config):
    """The model built from `config` with no memory behind its weights."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)


@dataclass
class SizeReport:
    parameters: int
    vision_parameters: int  # vision tower + projector
    trainable: int  # LoRA A and B of every targeted linear layer
    quantised: int  # QLoRA: weights stored as nf4
    kept_full_precision: list[str]  # QLoRA: top-level modules that stay in the training dtype
    tokens_per_example: int
    memory_gib: dict  # method -> estimate

    def as_dict(self) -> dict:
        return asdict(self)


def text_config(config):
    return getattr(config, "text_config", None) or config


def size_report(config, family, spec, batch_size: int, tokens: int, gradient_checkpointing: bool) -> SizeReport:
    """Parameters, trainable parameters and a GPU memory estimate (LoRA bf16 and QLoRA nf4)."""
    import torch

    from medzoo.adapters import target_modules

    model = meta_model(config)
    unique = {id(p): p for p in model.parameters()}  # tied embeddings once
    total = sum(p.numel() for p in unique.values())
    vision = sum(
        p.numel() for n, p in model.named_parameters() if any(n.startswith(v + ".") for v in family.vision_prefixes)
    )
    modules = dict(model.named_modules())
    targets = target_modules(model, family, spec)
    trainable = sum(spec.r * (modules[n].in_features + modules[n].out_features) for n in targets)
    skip = (*family.vision_prefixes, "lm_head")
    quantised = sum(
        m.weight.numel()
        for n, m in modules.items()
        if isinstance(m, torch.nn.Linear) and not any(n == s or n.startswith(s + ".") for s in skip)
    )
    tc = text_config(config)
    hidden, layers = tc.hidden_size, tc.num_hidden_layers
    per_token_layer = 2 * hidden if gradient_checkpointing else ACTIVATION_FACTOR * hidden
    recomputed = ACTIVATION_FACTOR * hidden if gradient_checkpointing else 0  # the one layer rebuilt at a time
    activations = batch_size * tokens * (layers * per_token_layer + recomputed)
    adapter = 16 * trainable
    lora = 2 * total + adapter + activations + CUDA_OVERHEAD
    qlora = NF4_BYTES * quantised + 2 * (total - quantised) + adapter + activations + CUDA_OVERHEAD
    return SizeReport(
        parameters=total,
        vision_parameters=vision,
        trainable=trainable,
        quantised=quantised,
        kept_full_precision=[*family.vision_prefixes, "lm_head", "embeddings and norms"],
        tokens_per_example=tokens,
        memory_gib={"lora_bf16": round(lora / 2**30, 1), "qlora_nf4": round(qlora / 2**30, 1)},
    )


QWEN_FINE_TUNING_MAX_PIXELS = 1003520  # 1280 x 28 x 28: the Qwen-VL fine-tuning default, when unset


def image_tokens(config, settings: dict) -> int:
    """Tokens one image takes at the recipe's largest image size, from the config alone."""
    if getattr(config, "mm_tokens_per_image", None):  # Gemma 3: fixed
        return int(config.mm_tokens_per_image)
    vc = config.vision_config
    unit = vc.patch_size * getattr(vc, "spatial_merge_size", 2)
    return int(settings.get("max_pixels") or QWEN_FINE_TUNING_MAX_PIXELS) // (unit * unit)


def pixel_bytes(config, settings: dict) -> int:
    """Bytes of one image's uint8 pixels in the preprocessed cache (medzoo.preprocess.PixelCodec)."""
    vc = config.vision_config
    if getattr(config, "mm_tokens_per_image", None):  # Gemma 3: the square image itself
        side = int(settings.get("image_size") or vc.image_size)
        return 3 * side * side
    merge = getattr(vc, "spatial_merge_size", 2)
    temporal = getattr(vc, "temporal_patch_size", 2)
    return image_tokens(config, settings) * merge * merge * 3 * temporal * vc.patch_size**2
