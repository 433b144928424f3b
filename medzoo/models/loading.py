"""One code path from a model reference to a loaded model and processor.

`zoo:tiny-gemma3` resolves to a locally built folder; `google/medgemma-4b-it` or a folder path go
straight to `from_pretrained`. The recipe's image settings are applied to the processor here, so
training, evaluation and export all see images at the same size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medzoo.errors import InvalidValue, MissingState
from medzoo.models.family import Family
from medzoo.models.registry import family_for_model_type


def model_type_of(path: str) -> str:
    local = Path(path) / "config.json"
    if local.exists():
        try:
            return json.loads(local.read_text())["model_type"]
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidValue(
                f"base: {local}: expected a JSON object with a model_type (a Hugging Face config)"
            ) from e
    if Path(path).is_dir():
        raise MissingState(f"base: {path}: the folder has no config.json (expected a Hugging Face model folder)")
    if _looks_like_path(path) or _under_local_folder(path):
        raise MissingState(f"base: {path}: no such folder (a local base must be a Hugging Face model folder)")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path).model_type
    except OSError as e:
        raise MissingState(f"base: {path}: {hub_unavailable_reason(e)}") from e


def is_local_path(ref: str) -> bool:
    """Whether a recipe's base names a folder on this machine rather than a Hub id."""
    return Path(ref).exists() or _looks_like_path(ref) or _under_local_folder(ref)


def _under_local_folder(ref: str) -> bool:
    """`models/mine` where ./models exists: a local path that is missing, not the Hub id models/mine."""
    return "/" in ref and Path(ref.split("/", 1)[0]).is_dir()


def _looks_like_path(ref: str) -> bool:
    """A Hub id is `name` or `owner/name`; anything else (absolute, ./, ~, deeper) is a path."""
    return ref.startswith((".", "/", "~")) or ref.count("/") > 1


def hub_unavailable_reason(error: Exception) -> str:
    """Why a Hub id could not be loaded, worded for what the user can do about it."""
    import os

    text = str(error)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return (
            "not in the Hugging Face cache and HF_HUB_OFFLINE=1 is set (make sets it by default); "
            "run with HF_HUB_OFFLINE=0 to download it, or try the recipe offline with --set base=zoo:<tiny model>"
        )
    if any(w in text.lower() for w in ("connect", "resolve", "timed out", "offline", "network")):
        return "cannot reach the Hugging Face Hub to download it (no network?); download it once where the Hub is reachable"
    if any(w in text.lower() for w in ("gated", "401", "403", "restricted")):
        return "the Hub refused access (a gated model: accept its licence on the Hub and log in with `hf auth login`)"
    return f"cannot load its config ({text.splitlines()[0] if text else type(error).__name__})"


def base_file(base: str, name: str) -> Path | None:
    """A file of a base model: from its folder, or for a Hub id from the Hugging Face cache
    (downloaded when the Hub is reachable). None when the model has no such file. Hub bases need
    this: transformers 5 saves no SentencePiece model, and llama.cpp reads Gemma's vocabulary from it."""
    if Path(base).is_dir():
        path = Path(base) / name
        return path if path.exists() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(base, name))
    except LocalEntryNotFoundError as e:  # offline and not cached (a subclass of the next: caught first)
        raise MissingState(
            f"base: {base}: {name} is not in the Hugging Face cache ({hub_unavailable_reason(e)})"
        ) from e
    except EntryNotFoundError:  # the Hub says the model has no such file
        return None


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


def load_model(path: str, dtype: str | None = None):
    """A transformers model placed by the host policy (medzoo.models.placement): on the GPU in
    bf16/fp16 where there is one, float32 on the CPU; `dtype` overrides the policy's dtype."""
    from transformers import AutoModelForImageTextToText

    from medzoo.models.placement import inference_placement

    return AutoModelForImageTextToText.from_pretrained(path, **inference_placement(dtype).from_pretrained_kwargs())


def greedy_generation_config(model) -> None:
    """Decode as vLLM (`--generation-config vllm`) and llama.cpp do: greedy, no penalties.

    A Hub model's generation_config.json may carry sampling settings or a repetition penalty that
    `generate` would otherwise apply (and that transformers restores over values passed equal to
    its defaults), so the reference engine would answer differently from the others."""
    from transformers import GenerationConfig

    old = model.generation_config
    model.generation_config = GenerationConfig(
        bos_token_id=old.bos_token_id, eos_token_id=old.eos_token_id, pad_token_id=old.pad_token_id
    )


def image_token_count(processor, family: Family, width: int, height: int, settings: dict) -> int:
    """Prompt tokens one image of this size becomes: Gemma 3 a fixed count (`image_seq_length`,
    256 for MedGemma); Qwen one per (patch x merge)^2 pixels after its resize (28 px squares for
    Qwen2/2.5-VL, 32 px for Qwen3-VL, so 1003520 max_pixels is up to 1280 / 980 tokens)."""
    fixed, unit = _image_token_rule(processor)
    if fixed:
        return fixed
    w, h = family.perceived_size(width, height, settings)
    return (w // unit) * (h // unit)


def _image_token_rule(processor) -> tuple[int | None, int]:
    """(Gemma 3's fixed tokens per image, or None; else Qwen's pixels per token side: patch x merge)."""
    if getattr(processor, "image_seq_length", None):
        return int(processor.image_seq_length), 0
    ip = processor.image_processor
    return None, ip.patch_size * ip.merge_size


def image_token_bound(processor, family: Family, settings: dict) -> int:
    """The most prompt tokens one image can become under these image settings (no image read)."""
    fixed, unit = _image_token_rule(processor)
    if fixed:
        return fixed
    return int(settings.get("max_pixels") or processor.image_processor.size["longest_edge"]) // (unit * unit)


def context_length(
    processor, family: Family, settings: dict, prompts: list[str], images: list[list], answer: int
) -> int:
    """Tokens the longest example needs in one sequence: its prompt text, its images' tokens and the
    answer budget (max_new_tokens). What vLLM's max_model_len and llama.cpp's context must hold."""
    if not prompts:
        return answer
    texts = processor.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    longest = max(
        len(ids) + sum(image_token_count(processor, family, *im.size, settings) for im in imgs)
        for ids, imgs in zip(texts, images)
    )
    return longest + answer


def model_context(path: str) -> int | None:
    """The longest sequence the model was built for (its text config's max_position_embeddings)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    text = getattr(config, "text_config", None) or config
    return getattr(text, "max_position_embeddings", None)


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
    processor = load_processor(path, settings)
    # What the recipe leaves unset is the processor's own (a Hub Qwen's max_pixels is 12845056, not
    # the 1003520 perceived_size would otherwise assume): prompts state the size the model sees.
    return RecipeBase(path, family, {**processor_image_settings(processor), **settings}, processor)


def processor_image_settings(processor) -> dict:
    """The processor's own image settings in the recipe's terms (min/max_pixels or image_size)."""
    size = dict(getattr(processor.image_processor, "size", None) or {})
    if size.get("longest_edge") and size.get("shortest_edge"):  # Qwen: a pixel-count range
        return {"min_pixels": int(size["shortest_edge"]), "max_pixels": int(size["longest_edge"])}
    if size.get("height"):  # Gemma 3: a fixed square
        return {"image_size": int(size["height"])}
    return {}
