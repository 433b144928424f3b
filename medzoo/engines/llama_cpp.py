"""llama.cpp (through llama-cpp-python) as a medzoo engine: a GGUF text model + its mmproj.

What it takes for llama.cpp to answer as training did: the image-token budget of Qwen-VL families
passed explicitly (llama.cpp's own budget resizes images differently), and on CPUs with AMX no
extra buffer types (their weight repacking segfaults on quantised models; the CLI tools' `-nr`).
The prompt is rendered by the GGUF's own chat template from the request's messages, as
llama-server and llama-mtmd-cli do.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


@contextlib.contextmanager
def quiet_native_stderr():
    """llama.cpp and mtmd log from C to fd 2 whatever `verbose` says; keep the terminal readable."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def _no_extra_buffer_types():
    """Load models with use_extra_bufts=False: the AMX repack path segfaults on quantised weights."""
    import llama_cpp.llama as llama_mod

    original = llama_mod.llama_cpp.llama_model_default_params

    def params():
        p = original()
        p.use_extra_bufts = False
        return p

    llama_mod.llama_cpp.llama_model_default_params = params
    try:
        yield
    finally:
        llama_mod.llama_cpp.llama_model_default_params = original


def image_token_budget(processor) -> tuple[int, int] | None:
    """(min, max) image tokens llama.cpp must use to resize like transformers does, or None.

    llama.cpp's Qwen2/2.5-VL projector ignores the processor's min/max pixels and uses its own
    budget (8..4096 tokens), so a tiny model's 112 px images became 140 px there (25 tokens
    instead of 16) and answers diverged; real Qwen2.5-VL defaults allow 16384 tokens, beyond that
    cap. The budget is passed explicitly (`--image-min-tokens/--image-max-tokens` on the CLI).
    """
    ip = processor.image_processor
    size = getattr(ip, "size", None) or {}
    if "longest_edge" not in size or not hasattr(ip, "merge_size"):
        return None  # fixed-size families (Gemma): the mmproj carries the size
    per_token = (ip.patch_size * ip.merge_size) ** 2
    return max(1, size.get("shortest_edge", per_token) // per_token), size["longest_edge"] // per_token


def _chat_handler(mmproj: Path, budget: tuple[int, int] | None):
    from llama_cpp.llama_chat_format import MTMDChatHandler

    class BudgetedHandler(MTMDChatHandler):
        """MTMDChatHandler with an explicit image token budget (mtmd_context_params)."""

        def _init_mtmd_context(self, llama_model):
            original = self._mtmd_cpp.mtmd_context_params_default

            def params():
                p = original()
                if budget:
                    p.image_min_tokens, p.image_max_tokens = budget
                return p

            self._mtmd_cpp.mtmd_context_params_default = params
            try:
                super()._init_mtmd_context(llama_model)
            finally:
                self._mtmd_cpp.mtmd_context_params_default = original

    return BudgetedHandler(clip_model_path=str(mmproj), verbose=False, use_gpu=False)


def load_gguf(model: Path, mmproj: Path, budget: tuple[int, int] | None = None, n_ctx: int = 2048):
    from llama_cpp import Llama

    with _no_extra_buffer_types():
        return Llama(
            model_path=str(model),
            chat_handler=_chat_handler(mmproj, budget),
            n_ctx=n_ctx,
            n_threads=os.cpu_count() or 1,
            verbose=False,
            seed=0,
        )


def gguf_answer(llm, messages: list[dict], images: list, max_new_tokens: int) -> str:
    from medzoo.engines.openai_engine import openai_messages  # the format llama-server takes as well

    out = llm.create_chat_completion(
        messages=openai_messages(messages, images), temperature=0.0, top_k=1, max_tokens=max_new_tokens, seed=0
    )
    return (out["choices"][0]["message"]["content"] or "").strip()


class LlamaCppEngine:
    """A loaded GGUF + mmproj; answers requests from their messages (the GGUF renders the prompt)."""

    def __init__(self, llm):
        self.llm = llm

    @classmethod
    def load(cls, model: Path, mmproj: Path, budget: tuple[int, int] | None = None, n_ctx: int = 2048):
        with quiet_native_stderr():
            return cls(load_gguf(model, mmproj, budget, n_ctx))

    def generate(self, requests, max_new_tokens: int) -> list[str]:
        if any(r.adapter for r in requests):
            raise ValueError("a GGUF holds one merged model; adapters are merged before export")
        with quiet_native_stderr():
            return [gguf_answer(self.llm, r.messages, r.images, max_new_tokens) for r in requests]

    def close(self) -> None:
        if self.llm is not None:
            with quiet_native_stderr():
                self.llm.close()
            self.llm = None
