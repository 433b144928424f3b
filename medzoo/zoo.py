"""The embedded model zoo: tiny random-weight VLMs of the real architectures, built offline.

`build("tiny-qwen2.5-vl")` writes a complete Hugging Face folder (config, safetensors, tokenizer,
processor, chat template, generation config) under $MEDZOO_HOME/zoo/<name>-seed<seed>, or reuses
it. Same name + seed = same bytes. `resolve_base("zoo:tiny-gemma3")` and
`resolve_base("google/medgemma-4b-it")` are the one code path from a recipe's `base` to a folder or id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medzoo.errors import AlreadyExists, UnknownName
from medzoo.paths import zoo_dir

ZOO_PREFIX = "zoo:"
# Bump whenever a tiny builder changes what it writes: cached folders are named with it, so an
# upgrade never reuses a stale model.
ZOO_VERSION = 5


@dataclass(frozen=True)
class ZooEntry:
    name: str
    family: str
    description: str
    real_counterpart: str  # the Hub model whose architecture it copies


ZOO = {
    e.name: e
    for e in (
        ZooEntry(
            "tiny-qwen2-vl", "qwen2_vl", "Qwen2-VL architecture, 2 layers, hidden 64", "Qwen/Qwen2-VL-7B-Instruct"
        ),
        ZooEntry(
            "tiny-qwen2.5-vl",
            "qwen2_5_vl",
            "Qwen2.5-VL architecture, 4 layers, hidden 128",
            "Qwen/Qwen2.5-VL-7B-Instruct",
        ),
        ZooEntry(
            "tiny-qwen3-vl", "qwen3_vl", "Qwen3-VL architecture, 2 layers, hidden 64", "Qwen/Qwen3-VL-4B-Instruct"
        ),
        ZooEntry(
            "tiny-gemma3", "gemma3", "Gemma 3 / MedGemma architecture, 4 layers, hidden 128", "google/medgemma-4b-it"
        ),
    )
}


def zoo_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        import difflib

        close = difflib.get_close_matches(name, ZOO, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownName(f"unknown zoo model {name!r}{hint}; known: {', '.join(ZOO)}")
    return ZOO[name]


def build(name: str, seed: int = 0, out: str | Path | None = None, force: bool = False) -> Path:
    """Build (or reuse) a tiny zoo model folder and return its path."""
    from medzoo.atomic import build_dir
    from medzoo.models.registry import get_family

    entry = zoo_entry(name)
    final = Path(out) if out else zoo_dir() / f"{name}-seed{seed}-v{ZOO_VERSION}"
    if final.exists() and (final / "config.json").exists() and not force:
        return final
    if final.exists() and any(final.iterdir()) and not (final / "config.json").exists():
        # not a model folder: never deleted, and never silently left as it is
        raise AlreadyExists(f"{final}: exists and is not a model folder; choose another --out or remove it")
    if final.exists() and force:
        import shutil

        shutil.rmtree(final)
    with _threads(1), build_dir(final) as tmp:
        get_family(entry.family).build_tiny(tmp, seed)
    return final


def resolve_base(base: str, seed: int = 0) -> str:
    """A recipe's `base` as something `from_pretrained` takes: a zoo folder, a local path or a Hub id."""
    if base.startswith(ZOO_PREFIX):
        return str(build(base[len(ZOO_PREFIX) :], seed=seed))
    return base


class _threads:
    """Build with one torch thread: deterministic init and fast for tiny tensors."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        import torch

        self.prev = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.prev)
