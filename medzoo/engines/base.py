"""The one interface every inference engine implements (transformers, vLLM, llama.cpp).

An engine is made with its own `load(...)` (what it needs differs: a model folder, a GGUF and its
projector, adapters), then answers prepared requests greedily, in one call, in request order, and is
`close()`d to free its memory. Requests carry the prompt rendered with the training chat template
and the same conversation as messages, so engines that render the prompt themselves (llama.cpp's
chat handler, an OpenAI-compatible server) get the same conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Request:
    prompt: str  # rendered by medzoo.prompts.render (the training prompt, byte for byte)
    images: list  # PIL images, in prompt order
    messages: list[dict] = field(default_factory=list)  # the conversation `prompt` was rendered from
    adapter: str | None = None  # label of the adapter to answer with (None: the base model)


class Engine(Protocol):
    def generate(self, requests: Sequence[Request], max_new_tokens: int) -> list[str]:
        """Greedy answers, one per request, in order."""
        ...

    def close(self) -> None:
        """Free the model's memory; the engine is unusable afterwards."""
        ...


def requests_from(prepared, adapter: str | None = None) -> list[Request]:
    """Requests for every example of a medzoo.inference.Prepared."""
    return [
        Request(prompt=p, images=im, messages=m, adapter=adapter)
        for p, im, m in zip(prepared.prompts, prepared.images, prepared.messages)
    ]
