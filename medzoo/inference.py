"""Prompting a model about examples: shared by `medzoo generate`, the bench and export parity.

`prepare` turns dataset rows into rendered prompts + images (through medzoo.prompts, the same code
training uses); `answer` runs them through one engine, in one batched call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medzoo.errors import InvalidValue

ENGINES = ("hf", "vllm")


@dataclass
class Prepared:
    prompts: list[str] = field(default_factory=list)
    images: list[list] = field(default_factory=list)
    routes: list[list[str]] = field(default_factory=list)
    messages: list[list[dict]] = field(default_factory=list)  # what `prompts` were rendered from


def example_images(row) -> list:
    from medzoo.data.images import as_rgb

    imgs = row["images"] if "images" in row and row["images"] is not None else [row["image"]]
    return [as_rgb(im) for im in imgs]


def prepare(rows, processor, family, settings, mode: str, image_settings: dict) -> Prepared:
    from medzoo.prompts import build_messages, render

    out = Prepared()
    for row in rows:
        imgs = example_images(row)
        w, h = imgs[0].size
        perceived = family.perceived_size(w, h, image_settings)
        messages, routes = build_messages(row, mode, settings, perceived_size=perceived, n_images=len(imgs))
        out.messages.append(messages)
        out.prompts.append(render(processor, messages))
        out.images.append(imgs)
        out.routes.append(routes)
    return out


def answer(
    engine: str,
    model_path: str,
    prepared: Prepared,
    processor,
    family,
    max_new_tokens: int,
    progress: bool = False,
    image_settings: dict | None = None,
) -> list[str]:
    """Greedy answers for prepared prompts from one engine ('hf' or 'vllm')."""
    from medzoo.models.loading import load_model, stop_token_ids

    stops = stop_token_ids(processor, family)
    if engine == "hf":
        from medzoo.engines import hf_engine

        model = load_model(model_path)
        return hf_engine.generate(
            model, processor, prepared.prompts, prepared.images, max_new_tokens, stops, progress=progress
        )
    if engine == "vllm":
        from medzoo.engines import vllm_engine

        llm = vllm_engine.load_engine(
            model_path, limit_images=max(len(i) for i in prepared.images), image_settings=image_settings
        )
        return vllm_engine.generate(llm, prepared.prompts, prepared.images, max_new_tokens, stops)
    raise InvalidValue(f"engine must be one of {ENGINES}, got {engine!r}")


def generate_for_recipe(recipe, split: str = "test", index: int = 0, engines=("hf",), mode: str = "none") -> dict:
    """Answer one dataset example of a recipe with the base model, per engine (the demo's smoke test)."""
    from medzoo.data.sources import load_splits
    from medzoo.models.loading import recipe_base
    from medzoo.recipe import prompt_settings

    base = recipe_base(recipe)
    model_path, family, settings, processor = base.path, base.family, base.image_settings, base.processor
    ds = load_splits(recipe.data)[split]
    if not 0 <= index < len(ds):
        raise InvalidValue(f"--index {index}: split {split!r} has {len(ds)} examples")
    row = ds[index]
    prepared = prepare([row], processor, family, prompt_settings(recipe), mode, settings)
    answers = {
        e: answer(e, model_path, prepared, processor, family, recipe.bench.max_new_tokens, image_settings=settings)[0]
        for e in engines
    }
    return {
        "model": model_path,
        "id": row["id"],
        "prompt": prepared.prompts[0],
        "reference": row["answer"],
        "answers": answers,
    }
