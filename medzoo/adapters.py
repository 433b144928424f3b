"""LoRA / QLoRA adapters: which modules get them, and loading the base for each method.

Default targets are every linear layer of the language model; the vision tower and projector stay
frozen (and unquantised under QLoRA) unless the recipe says `train_vision: true`.
"""

from __future__ import annotations

from pathlib import Path

from medzoo.errors import InvalidValue, MissingState


def adapter_digest(adapter_dir: str | Path) -> str:
    """sha256 of the adapter's weights and config: identifies what a merged copy was made from."""
    import hashlib

    adapter_dir = Path(adapter_dir)
    read_adapter_config(adapter_dir)  # a garbage config is one line here, not peft's traceback later
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        p = adapter_dir / name
        if not p.exists():
            raise MissingState(f"{adapter_dir}: not a peft adapter folder (missing {name})")
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def check_adapter_finite(adapter_dir) -> None:
    """Refuse an adapter whose weights hold NaN or inf (a checkpoint of a diverged run): every
    answer it gives is garbage that would still be scored."""
    from safetensors import safe_open

    path = Path(adapter_dir) / "adapter_model.safetensors"
    if not path.exists():
        return  # read_adapter_config / the loader name what is missing
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            if not bool(f.get_tensor(name).isfinite().all()):
                raise InvalidValue(
                    f"{adapter_dir}: adapter weight {name} holds NaN or inf (the training run diverged); "
                    "use an earlier checkpoint or retrain with a lower train.lr"
                )


def read_adapter_config(adapter_dir) -> dict:
    """A peft adapter folder's adapter_config.json, or a one-line error naming the file."""
    import json

    path = Path(adapter_dir) / "adapter_config.json"
    if not path.exists():
        raise MissingState(f"{adapter_dir}: not a peft adapter folder (no adapter_config.json)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidValue(f"{path}: not valid JSON ({e})") from e
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


def quantization_config(family, compute_dtype: str = "bfloat16"):
    """nf4 + double quantisation, computing in train.precision's dtype; vision tower, projector and
    LM head stay full precision."""
    import torch
    from transformers import BitsAndBytesConfig

    # bitsandbytes' CPU kernels need widths divisible by 64, and vision quality suffers from 4-bit:
    # keep them out. Names are matched as prefixes ("model.visual", not "visual").
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
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


def base_training_kwargs(family, spec, precision: str, on_cuda: bool | None = None) -> dict:
    """`from_pretrained` arguments for the base under an adapter (medzoo.models.placement's policy).

    LoRA: the weights in train.precision's dtype; the Trainer moves the model to the GPU (and DDP /
    DeepSpeed place it per rank), so no device_map. QLoRA: nf4 computing in that dtype, loaded
    straight onto this rank's GPU (bitsandbytes quantises while loading and cannot be moved after;
    without device_map every torchrun rank would load onto cuda:0). The modules QLoRA keeps in
    full precision (vision tower, projector, LM head) are float32 on the CPU, the training dtype
    on a GPU."""
    import torch

    from medzoo.models.placement import cuda_available, local_rank, training_dtype

    on_cuda = cuda_available() if on_cuda is None else on_cuda
    dtype = training_dtype(precision, on_cuda)
    if spec.method != "qlora":
        return {"dtype": getattr(torch, dtype)}
    kwargs = {"quantization_config": quantization_config(family, dtype), "dtype": torch.float32}
    if on_cuda:
        kwargs.update(dtype=getattr(torch, dtype), device_map={"": local_rank()})
    return kwargs


def load_base_for_training(path: str, family, spec, precision: str):
    """The base model ready for an adapter: train.precision for LoRA, 4-bit nf4 for QLoRA."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path, **base_training_kwargs(family, spec, precision))
    if spec.method == "qlora":
        disable_cpu_repacking(model)
    return model


def attach_adapter(model, family, spec, gradient_checkpointing: bool, adapter_path: str | None = None):
    """Wrap the base in a trainable peft model (fresh, or continuing from `adapter_path`)."""
    from peft import PeftModel, get_peft_model

    if spec.method == "qlora":
        # Not peft's prepare_model_for_kbit_training: besides freezing the base it casts every weight
        # that is not 4-bit (vision tower, projector, embeddings, LM head: 1.09B of MedGemma's 4.3B)
        # to float32, twice their bf16 memory on a GPU, which costs QLoRA most of its saving. The
        # adapter's own weights are float32 anyway (peft's autocast_adapter_dtype).
        for param in model.parameters():
            param.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if adapter_path:
        return PeftModel.from_pretrained(model, adapter_path, is_trainable=True)
    return get_peft_model(model, lora_config(model, family, spec))


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; under ZeRO-3 a parameter's local tensor is an empty shard and
    its full size is `ds_numel`."""

    def size(p) -> int:
        return getattr(p, "ds_numel", p.numel())

    return sum(size(p) for p in model.parameters() if p.requires_grad), sum(size(p) for p in model.parameters())
