"""Costs of vLLM 0.32 that medzoo removes in its own process (vLLM's files are untouched).

All are installed by medzoo.engines.vllm_engine.load_engine, are idempotent, and leave things as
they were on versions without the functions they replace. tests/unit/test_vllm_patches.py pins
their results to the originals; the e2e bench tests pin the answers to transformers + peft.

1. Start-up: processors loaded again and again (`reuse_passed_tokenizer`, `sharing_tokenizers`).
vLLM 0.32 asks transformers for the model's processor with `tokenizer=<its own tokenizer>` each
time a part of the engine needs it (the input processor, the encoder budget, the multimodal
warm-up, LoRA). transformers 5.19's `ProcessorMixin.from_pretrained` does not use that tokenizer:
it deep-copies its keyword arguments (for an optional audio tokenizer) and loads the tokenizer
from disk again, keeping the passed one as an init argument. vLLM's tokenizer is a thread pool of
deep copies whose own deep copy rebuilds the pool, so each such fetch of a Qwen processor (151k
tokens) cost 5-15 s. Measured, tiny Qwen2.5-VL on 2 cores: engine start 33 s -> 11 s with
`reuse_passed_tokenizer()`, answers unchanged (the processor gets the very tokenizer vLLM uses).
Two more processors are built with no tokenizer at all (the encoder budget, the chat-template
lookup); while vLLM builds its engine (`sharing_tokenizers()`) they share one tokenizer per folder.

What the patch does is what the keyword promises: a processor built around the tokenizer the
caller passed. Calls without `tokenizer=` outside an engine start (medzoo's own processor loads)
are not touched.

1b. Start-up: the renderer's tokenizer pool (`lazy_tokenizer_pool`): see the function.

2. Generation with LoRA on CPU (`grouped_cpu_lora_ops`).
vLLM's CPU LoRA ops gather one (rank x hidden) matrix PER TOKEN (`weights[token_indices]`) and
multiply with einsum, for each of the 28 LoRA layers of a 4-layer model and each step: on tiny
Qwen2.5-VL that doubled generation (1800 answers: 22.5 s with LoRA enabled vs 11.4 s without).
The replacement multiplies each adapter's rows with its matrix once (one matmul per adapter in
the batch). Rows without an adapter (index -1) get exactly zero; the originals read the LAST slot
for them, which is why medzoo keeps one LoRA slot free (medzoo.bench.generate).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

_state = threading.local()
_installed = False
_shared: dict = {}  # model folder -> the tokenizer vLLM passed (or had loaded) for it
_sharing = False  # True while vLLM builds an engine (sharing_tokenizers)


def reuse_passed_tokenizer() -> bool:
    """Make `ProcessorMixin.from_pretrained(..., tokenizer=tok)` build around `tok` (idempotent).

    Returns False, changing nothing, on a transformers without the two methods this relies on.
    """
    global _installed
    if _installed:
        return True
    from transformers.processing_utils import ProcessorMixin

    load_tokenizer = getattr(ProcessorMixin, "_load_tokenizer_from_pretrained", None)
    if load_tokenizer is None or not hasattr(ProcessorMixin.from_pretrained, "__func__"):
        return False
    original_load = load_tokenizer.__func__
    original_from_pretrained = ProcessorMixin.from_pretrained.__func__

    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        tokenizer = kwargs.pop("tokenizer", None)
        key = str(pretrained_model_name_or_path)
        if tokenizer is not None:
            _shared[key] = tokenizer
        elif _sharing:  # vLLM also builds processors without one (encoder budget, chat-template lookup)
            tokenizer = _shared.get(key)
        if tokenizer is None:
            processor = original_from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs)
            if _sharing and getattr(processor, "tokenizer", None) is not None:
                _shared.setdefault(key, processor.tokenizer)
            return processor
        outer, _state.tokenizer = getattr(_state, "tokenizer", None), tokenizer
        try:
            return original_from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs)
        finally:
            _state.tokenizer = outer

    def _load_tokenizer_from_pretrained(cls, sub_processor_type, pretrained_model_name_or_path, subfolder="", **kw):
        passed = getattr(_state, "tokenizer", None)
        if passed is not None and sub_processor_type == "tokenizer":  # the primary tokenizer only
            return passed
        return original_load(cls, sub_processor_type, pretrained_model_name_or_path, subfolder=subfolder, **kw)

    ProcessorMixin.from_pretrained = classmethod(from_pretrained)
    ProcessorMixin._load_tokenizer_from_pretrained = classmethod(_load_tokenizer_from_pretrained)
    _installed = True
    return True


@contextmanager
def sharing_tokenizers():
    """While vLLM builds an engine, processors it loads without a tokenizer reuse the one it passed
    (or had loaded) for the same folder instead of reading it from disk again. medzoo's own loads,
    outside this block, are untouched."""
    global _sharing
    outer, _sharing = _sharing, True
    try:
        yield
    finally:
        _sharing = outer


def lazy_tokenizer_pool() -> bool:
    """Start vLLM's renderer tokenizer pool empty instead of with deep copies (idempotent).

    vLLM 0.32's renderer deep-copies its tokenizer `renderer_num_workers + 1` times at start-up: a
    pool so that concurrent async requests each tokenize on their own copy. A Qwen tokenizer's deep
    copy walks its 151k-entry vocabularies in Python (2.4M `deepcopy` calls each). medzoo's
    in-process engine renders from one thread at a time, and vLLM's own borrow makes a copy when
    the pool is empty, so starting it empty keeps every borrower on its own copy and makes one copy,
    when first needed. Returns False, changing nothing, where the function is not the 0.32 one.
    """
    import inspect

    try:
        from vllm.renderers import hf as renderer_hf
    except ImportError:
        return False
    original = getattr(renderer_hf, "maybe_make_thread_pool", None)
    if getattr(original, "_medzoo_lazy", False):
        return True
    if original is None or list(inspect.signature(original).parameters) != ["tokenizer", "copies"]:
        return False

    def maybe_make_thread_pool(tokenizer, copies=1):
        return original(tokenizer, 0)

    maybe_make_thread_pool._medzoo_lazy = True
    renderer_hf.maybe_make_thread_pool = maybe_make_thread_pool
    return True


def _per_adapter_product(inputs, weights, indices, dtype):
    """Row b of the result is inputs[b] @ weights[indices[b]].T, and zero where indices[b] < 0."""
    import torch

    if weights.dim() == 4:  # (slots, 1, out, in)
        weights = weights.squeeze(1)
    inputs = inputs.to(dtype)
    out = torch.zeros((inputs.shape[0], weights.shape[1]), dtype=dtype, device=inputs.device)
    indices = indices[: inputs.shape[0]]
    for slot in torch.unique(indices).tolist():
        if slot < 0:
            continue
        rows = (indices == slot).nonzero(as_tuple=True)[0]
        out[rows] = inputs[rows] @ weights[slot].to(dtype).T
    return out


def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0):
    outputs = _per_adapter_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True):
    outputs = _per_adapter_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    common_len = min(outputs.shape[1], output_tensor.shape[1])  # the two may pad differently
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def bgmv_expand_slice(
    inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset: int, slice_size: int, add_inputs=True
):
    outputs = _per_adapter_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs[:]


_REPLACED = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")


def grouped_cpu_lora_ops() -> bool:
    """Swap vLLM's per-token CPU LoRA ops for the per-adapter ones above (idempotent).

    The `sgmv_*` (prefill) ops call the `bgmv_*` ones through their module, so they follow. Returns
    False, changing nothing, where the ops are not the 0.32 ones this was checked against.
    """
    import inspect

    try:
        from vllm.lora.ops import torch_ops
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return False
    if getattr(lora_ops, "_medzoo_grouped", False):
        return True
    for name in _REPLACED:
        original = getattr(lora_ops, name, None)
        if original is None or list(inspect.signature(original).parameters) != list(
            inspect.signature(globals()[name]).parameters
        ):
            return False
    for module in (lora_ops, torch_ops, punica_cpu):
        for name in _REPLACED:
            if hasattr(module, name):
                setattr(module, name, globals()[name])
    lora_ops._medzoo_grouped = True
    return True
