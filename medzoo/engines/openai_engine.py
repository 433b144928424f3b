"""Any OpenAI-compatible chat endpoint as an engine: `medzoo serve`, `vllm serve`, llama-server, yours.

The server renders the conversation with its own chat template, so requests carry the messages
medzoo renders for training (images first, as PNG data URIs: lossless, the server decodes the same
pixels) and not the rendered prompt. Greedy: temperature 0, `max_tokens` as the bench asks. Requests
are sent concurrently (the server batches them) and answered in request order.

A bench model label picks the served model: the base model answers requests without an adapter,
and an adapter label ("tuned") must be served under that name (`medzoo serve` does so; with
`vllm serve`, `--lora-modules tuned=ADAPTER`).
"""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from medzoo.errors import InvalidValue, MissingState


def data_uri(image) -> str:
    """A PIL image as a PNG data URI (lossless, so the server sees medzoo's pixels)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def openai_messages(messages: list[dict], images: list) -> list[dict]:
    """medzoo's chat messages ({"type": "image"} placeholders) with the images put in as image_url parts."""
    pending = iter(images)
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    parts.append({"type": "image_url", "image_url": {"url": data_uri(next(pending))}})
                else:
                    parts.append({"type": "text", "text": part["text"]})
            content = parts
        out.append({"role": message["role"], "content": content})
    return out


class OpenAIEngine:
    """Chat completions against `base_url` (…/v1); `models`: bench label -> served model name."""

    def __init__(
        self,
        base_url: str,
        models: dict[str, str],
        api_key: str | None = None,
        concurrency: int = 16,
        extra: dict | None = None,
    ):
        self.base_url, self.models = base_url.rstrip("/"), models
        self.api_key, self.concurrency = api_key, concurrency
        self.extra = extra or {}  # server-specific request fields (vLLM's sampling parameters)

    @classmethod
    def connect(
        cls,
        base_url: str,
        labels: Sequence[str],
        model: str | None = None,
        api_key: str | None = None,
        stop_token_ids: Sequence[int] = (),
    ) -> OpenAIEngine:
        """Check the endpoint answers and serves a model per bench label ('base' -> `model`).

        On a vLLM server the requests also carry the stop tokens and neutral sampling settings that
        medzoo's in-process engine uses, so a model's generation_config.json cannot change them."""
        engine = cls(base_url, {}, api_key)
        served = engine.served_models()
        if served and all(m.get("owned_by") == "vllm" for m in served):
            engine.extra = {
                "stop_token_ids": list(stop_token_ids),
                "repetition_penalty": 1.0,
                "top_k": -1,
                "top_p": 1.0,
            }
        ids = [m["id"] for m in served]
        # vLLM lists LoRA modules with a `parent`; the base is a model without one.
        bases = [m["id"] for m in served if not m.get("parent")]
        base = model or (bases[0] if bases else None)
        if base is None or base not in ids:
            raise InvalidValue(f"--model {model!r}: the endpoint {base_url} serves {', '.join(ids) or 'no model'}")
        if "base" in labels and base != "base" and base in labels:  # e.g. llama-server of the merged model
            raise InvalidValue(f"{base_url} serves only {', '.join(ids)}, no base model: bench it with --models {base}")
        for label in labels:
            if label == "base":
                engine.models[label] = base
            elif label in ids:
                engine.models[label] = label
            else:
                raise MissingState(
                    f"{base_url} serves no model named {label!r} (it serves {', '.join(ids)}); start it with "
                    f"`medzoo serve`, or `vllm serve ... --lora-modules {label}=ADAPTER`, or bench --models base"
                )
        return engine

    def _call(self, path: str, payload: dict | None = None, timeout: float = 600) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:300]
            raise InvalidValue(f"{self.base_url}{path}: HTTP {e.code}: {detail}") from e
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            raise MissingState(
                f"{self.base_url}: no OpenAI-compatible server answers ({e}); start one with `medzoo serve`"
            ) from e

    def served_models(self) -> list[dict]:
        return self._call("/models", timeout=30).get("data", [])

    def _answer(self, request, max_new_tokens: int) -> str:
        payload = {
            "model": self.models[request.adapter or "base"],
            "messages": openai_messages(request.messages, request.images),
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
            "seed": 0,
            **self.extra,
        }
        return self._call("/chat/completions", payload)["choices"][0]["message"]["content"] or ""

    def generate(self, requests, max_new_tokens: int) -> list[str]:
        unknown = {r.adapter for r in requests if r.adapter and r.adapter not in self.models}
        if unknown:
            raise ValueError(f"adapters {sorted(unknown)} are not served by {self.base_url}")
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda r: self._answer(r, max_new_tokens), requests))

    def close(self) -> None:
        pass  # the server is not ours to stop
