"""Where a model runs and in which dtype: one policy, per host, that every stage reads.

- CUDA: bfloat16, or float16 on a GPU without bf16 (T4, V100). vLLM's CUDA LoRA kernels accept
  only these two (vLLM 0.32 asserts it in its triton shrink/expand ops), flash attention needs
  them, and they halve the weights' memory. transformers models are placed on the GPU
  (`device_map`), on the local rank's GPU under torchrun / accelerate.
- CPU: float32. The tiny zoo models are random and their logits nearly tied: in bf16 vLLM and
  transformers parted on whole sequences, in float32 they agreed on 62-64 of 64 (measured).

A recipe may ask for a dtype (`bench.dtype`, `merge --dtype`); "auto" is this policy. Merging keeps
the base's own dtype (its config's `dtype`), so a merged MedGemma is bf16 like the Hub's, not twice
its size in float32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from medzoo.errors import InvalidValue

DTYPES = ("float32", "bfloat16", "float16")
# Recipe spellings (train.precision) -> torch dtype names.
PRECISION_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU. A torch that cannot be imported is a broken install, not "no
    GPU": that error propagates instead of silently running a 7B model on the CPU."""
    import torch

    return torch.cuda.is_available()


def bf16_supported() -> bool:
    import torch

    return torch.cuda.is_bf16_supported()


def local_rank() -> int:
    """This process's GPU under torchrun / accelerate (LOCAL_RANK), 0 alone."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def host_dtype(on_cuda: bool | None = None) -> str:
    """The dtype of this host's policy: bf16 (fp16 without bf16) on CUDA, float32 on CPU."""
    on_cuda = cuda_available() if on_cuda is None else on_cuda
    if not on_cuda:
        return "float32"
    return "bfloat16" if bf16_supported() else "float16"


def resolve_dtype(requested: str | None, on_cuda: bool | None = None, field: str = "dtype") -> str:
    """`requested` ("auto"/None = the host policy) checked against what the host can run."""
    on_cuda = cuda_available() if on_cuda is None else on_cuda
    if requested in (None, "auto"):
        return host_dtype(on_cuda)
    if requested not in DTYPES:
        raise InvalidValue(f"{field}: expected auto, {', '.join(DTYPES)}; got {requested!r}")
    if requested == "bfloat16" and on_cuda and not bf16_supported():
        raise InvalidValue(f"{field}: bfloat16 is not supported by this GPU; use float16")
    return requested


def training_dtype(precision: str, on_cuda: bool | None = None) -> str:
    """train.precision as a dtype, refused where the GPU cannot run it (bf16 on a T4)."""
    return resolve_dtype(PRECISION_DTYPES[precision], on_cuda, field="train.precision")


@dataclass(frozen=True)
class Placement:
    """A device and dtype for a transformers model."""

    device: str  # "cpu" or "cuda"
    dtype: str  # one of DTYPES

    def from_pretrained_kwargs(self) -> dict:
        """What `from_pretrained` is given: the dtype, and on CUDA the local rank's GPU."""
        import torch

        kwargs = {"dtype": getattr(torch, self.dtype)}
        if self.device == "cuda":
            kwargs["device_map"] = {"": local_rank()}
        return kwargs


def inference_placement(dtype: str | None = None, on_cuda: bool | None = None) -> Placement:
    """Generation and logit checks with transformers: the GPU when there is one, in the host dtype."""
    on_cuda = cuda_available() if on_cuda is None else on_cuda
    return Placement("cuda" if on_cuda else "cpu", resolve_dtype(dtype, on_cuda))


def config_dtype(model_path: str) -> str | None:
    """The dtype a model folder or Hub id was saved in (config.json's `dtype` / `torch_dtype`)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if value is None:
        return None
    name = str(value).removeprefix("torch.")
    return name if name in DTYPES else None


def to_model(inputs, model):
    """Processor outputs on the model's device, floating tensors (pixels) in its dtype."""
    import torch

    device, dtype = model.device, model.dtype
    return {
        k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
        for k, v in inputs.items()
    }
