"""LoRA / QLoRA adapters: which modules get them, and loading the base for each method.

Default targets are every linear layer of the language model; the vision tower and projector stay
frozen (and unquantised under QLoRA) unless the recipe says `train_vision: true`.
"""

from __future__ import annotations

from pathlib import Path

from medzoo.errors import InvalidValue, MissingState


def read_adapter_config(adapter_dir) -> dict:
    """A peft adapter folder's adapter_config.json, or a one-line error naming the file."""
    import json

    path = Path(adapter_dir) / "adapter_config.json"
    if not path.exists():
        raise MissingState(f"{adapter_dir}: not a peft adapter folder (no adapter_config.json)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidValue(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or "peft_type" not in config:
        raise InvalidValue(f"{path}: not a peft adapter config (expected a JSON object with 'peft_type')")
    return config


def vision_lora_keys(adapter_dir, family) -> list[str]:
    """The adapter's LoRA weight names on the vision tower or projector (trained with `train_vision`)."""
    from safetensors import safe_open

    # vision_prefixes are module paths like "model.visual"; adapter keys carry "base_model.model." first.
    names = [p.split(".")[-1] for p in family.vision_prefixes]
    with safe_open(str(Path(adapter_dir) / "adapter_model.safetensors"), "pt") as f:
        return [k for k in f.keys() if any(f".{n}." in f".{k}" for n in names)]


def linear_module_names(model, prefixes: tuple[str, ...], leaves: list[str] | None = None) -> list[str]:
    """Full names of the linear layers under the given module prefixes (optionally only these leaves).

    Full names, not leaf names: a leaf such as "0" in a projector's `mlp.0` would otherwise also
    match whole transformer blocks. bitsandbytes' Linear4bit subclasses nn.Linear, so quantised
    layers are found too."""
    import torch

    return sorted(
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and any(name.startswith(p + ".") for p in prefixes)
        and (leaves is None or name.rsplit(".", 1)[-1] in leaves)
    )


def target_modules(model, family, spec) -> list[str]:
    """peft `target_modules` for the recipe's adapter spec: explicit full module names."""
    prefixes = [family.language_prefix]
    if spec.train_vision:
        prefixes += list(family.vision_prefixes)
    leaves = None if spec.target_modules == "all-linear" else list(spec.target_modules)
    names = linear_module_names(model, tuple(prefixes), leaves)
    if not names:
        raise InvalidValue(f"adapter.target_modules: no linear layers {leaves or ''} found under {', '.join(prefixes)}")
    return names


def lora_config(model, family, spec):
    from peft import LoraConfig

    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=target_modules(model, family, spec),
        modules_to_save=list(spec.modules_to_save) or None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def quantization_config(family):
    """nf4 + double quantisation + bf16 compute; vision tower, projector and LM head stay full precision."""
    import torch
    from transformers import BitsAndBytesConfig

    # bitsandbytes' CPU kernels need widths divisible by 64, and vision quality suffers from 4-bit:
    # keep them out. Names are matched as prefixes ("model.visual", not "visual").
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=[*family.vision_prefixes, "lm_head"],
    )


def disable_cpu_repacking(model) -> int:
    """bitsandbytes' fast CPU path repacks 4-bit weights in place after a no-grad forward, and
    training afterwards fails ("a view of a leaf Variable ... in-place operation"); switch it off."""
    n = 0
    for module in model.modules():
        if type(module).__name__ == "Linear4bit" and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_base_for_training(path: str, family, spec, precision: str):
    """The base model ready for an adapter: full precision for LoRA, 4-bit nf4 for QLoRA."""
    import torch
    from transformers import AutoModelForImageTextToText

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if spec.method == "qlora":
        model = AutoModelForImageTextToText.from_pretrained(
            path, quantization_config=quantization_config(family), dtype=torch.float32
        )
        disable_cpu_repacking(model)
        return model
    return AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)


def attach_adapter(model, family, spec, gradient_checkpointing: bool, adapter_path: str | None = None):
    """Wrap the base in a trainable peft model (fresh, or continuing from `adapter_path`)."""
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    if spec.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if adapter_path:
        return PeftModel.from_pretrained(model, adapter_path, is_trainable=True)
    return get_peft_model(model, lora_config(model, family, spec))


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
