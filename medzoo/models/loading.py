"""One code path from a model reference to a loaded model and processor.

`zoo:tiny-gemma3` resolves to a locally built folder; `google/medgemma-4b-it` or a folder path go
straight to `from_pretrained`. The recipe's image settings are applied to the processor here, so
training, evaluation and export all see images at the same size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medzoo.errors import MissingState
from medzoo.models.family import Family
from medzoo.models.registry import family_for_model_type


def model_type_of(path: str) -> str:
    local = Path(path) / "config.json"
    if local.exists():
        return json.loads(local.read_text())["model_type"]
    import os

    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path).model_type
    except OSError as e:
        if os.environ.get("HF_HUB_OFFLINE") == "1" or "offline" in str(e).lower() or "connect" in str(e).lower():
            raise MissingState(
                f"base: {path}: not available offline (not a local folder and not in the Hugging Face cache); "
                f"download it once with network access, or try the recipe offline with --set base=zoo:<tiny model>"
            ) from None
        raise MissingState(f"base: {path}: cannot load its config ({str(e).splitlines()[0]})") from None


def family_of(path: str) -> Family:
    return family_for_model_type(model_type_of(path))


def image_settings(family: Family, image_spec=None, path: str | None = None) -> dict:
    """The effective image settings: recipe values over the zoo defaults (tiny models) or the processor's."""
    settings = dict(family.tiny_image_settings) if path and _is_zoo_folder(path) else {}
    if image_spec is not None:
        for key in ("min_pixels", "max_pixels", "image_size"):
            value = getattr(image_spec, key, None)
            if value is not None:
                settings[key] = value
    return settings


def _is_zoo_folder(path: str) -> bool:
    from medzoo.paths import zoo_dir

    try:
        return Path(path).resolve().is_relative_to(zoo_dir().resolve())
    except OSError:
        return False


def load_processor(path: str, settings: dict | None = None):
    """The family's processor with the image settings applied (left padding for batched generation)."""
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(path)
    settings = settings or {}
    ip = proc.image_processor
    if "min_pixels" in settings or "max_pixels" in settings:
        size = dict(ip.size)
        size["shortest_edge"] = settings.get("min_pixels", size.get("shortest_edge"))
        size["longest_edge"] = settings.get("max_pixels", size.get("longest_edge"))
        ip.size = size
    if "image_size" in settings:
        ip.size = {"height": settings["image_size"], "width": settings["image_size"]}
    return proc


def load_model(path: str, dtype: str = "float32"):
    import torch
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, dtype))


def stop_token_ids(processor, family: Family) -> list[int]:
    tok = processor.tokenizer
    ids = {tok.convert_tokens_to_ids(family.end_of_turn)}
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return sorted(ids)


@dataclass
class RecipeBase:
    """A recipe's base model resolved: where it is, its family, image settings and processor."""

    path: str
    family: Family
    image_settings: dict
    processor: object


def recipe_base(recipe) -> RecipeBase:
    """The one path from a recipe to its base model (train, bench, merge, export, generate)."""
    from medzoo.zoo import resolve_base

    path = resolve_base(recipe.base, seed=recipe.seed)
    family = family_of(path)
    settings = image_settings(family, recipe.image, path)
    return RecipeBase(path, family, settings, load_processor(path, settings))
