"""`medzoo train --dry-run`'s first part: sizes and memory from the base's config, before any download.

It needs no weights, no processor and no GPU: the architecture comes from the config
(medzoo.models.sizing, with medzoo's copies for the seed bases), the example count and text length
from the recipe's data, the image tokens from the image settings. A base that is on disk then gets
the measured part too (medzoo.train.runner: one real batch forward and backward).
"""

from __future__ import annotations

TEXT_CHARS_PER_TOKEN = 4  # rough for English prompts in these tokenizers; only the text part uses it
TEMPLATE_TOKENS = 32  # chat-template turns and image markers around the prompt and answer
CACHE_TOKEN_COLUMNS = 4  # input_ids, labels, attention mask, token types: int64 each


def training_plan(recipe, log=print) -> dict:
    from medzoo.models.loading import image_settings
    from medzoo.models.registry import family_for_model_type
    from medzoo.models.sizing import base_config, image_tokens, pixel_bytes, size_report
    from medzoo.zoo import resolve_base

    base = resolve_base(recipe.base, seed=recipe.seed)
    config, source = base_config(base)
    family = family_for_model_type(config.model_type)
    settings = image_settings(family, recipe.image, base)
    rows, images, text_chars = _data_shape(recipe)
    per_image = image_tokens(config, settings)
    tokens = images * per_image + text_chars // TEXT_CHARS_PER_TOKEN + TEMPLATE_TOKENS
    t = recipe.train
    sizes = size_report(config, family, recipe.adapter, t.batch_size, tokens, t.gradient_checkpointing)
    cache = rows * (images * pixel_bytes(config, settings) + tokens * 8 * CACHE_TOKEN_COLUMNS)
    plan = {
        "base": recipe.base,
        "config": source,
        "family": family.name,
        "train_examples": rows,
        "images_per_example": images,
        "tokens_per_image": per_image,
        **sizes.as_dict(),
        "cache_gb": round(cache / 1e9, 2),
    }
    m = sizes.memory_gib
    log(f"base: {recipe.base} ({family.name}, architecture from {source})")
    log(
        f"parameters: {sizes.parameters:,} ({sizes.vision_parameters:,} vision tower + projector); "
        f"trainable ({recipe.adapter.method}, r={recipe.adapter.r}): {sizes.trainable:,} "
        f"({100 * sizes.trainable / sizes.parameters:.2f}%)"
    )
    log(f"QLoRA: {sizes.quantised:,} weights in nf4; kept in {t.precision}: {', '.join(sizes.kept_full_precision)}")
    log(
        f"GPU memory estimate at batch {t.batch_size} x {tokens} tokens "
        f"({images} image(s) x {per_image} + text), gradient checkpointing "
        f"{'on' if t.gradient_checkpointing else 'off'}: LoRA bf16 ~{m['lora_bf16']} GiB, QLoRA nf4 ~{m['qlora_nf4']} GiB"
    )
    log(f"preprocessed cache: ~{plan['cache_gb']} GB for {rows} training examples (uint8 pixels + token ids)")
    return plan


def _data_shape(recipe) -> tuple[int, int, int]:
    """(training examples after the limit, most images per example, longest question + answer in
    characters) from the recipe's train split, with nothing decoded."""
    from medzoo.data.sources import load_splits, most_images

    splits = load_splits(recipe.data)
    ds = splits.get("train") or next(iter(splits.values()))
    limit = recipe.data.limit_train
    rows = min(len(ds), limit) if limit else len(ds)
    images = most_images(ds)
    sample = ds.select_columns([c for c in ("question", "answer") if c in ds.column_names]).select(
        range(min(len(ds), 256))
    )
    chars = max((sum(len(str(v)) for v in row.values()) for row in sample), default=0)
    static = len(recipe.prompts.static or "")
    return rows, images, chars + static
