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
    downscaled: int = 0  # images bounded to what the processor keeps (medzoo.data.images.for_model)


@dataclass
class ExampleImages:
    """An example's images as the model gets them, the first one's size as the model perceives it
    (after its processor's resize) and as the file has it (what pixel spacings refer to)."""

    images: list
    perceived_size: tuple[int, int]
    native_size: tuple[int, int]
    downscaled: int


def example_images(row, family, image_settings: dict) -> ExampleImages:
    """The same for training and every engine: normalised (as_rgb) and bounded (for_model)."""
    from medzoo.data.images import as_rgb, for_model

    raw = row["images"] if "images" in row and row["images"] is not None else [row["image"]]
    normalised = [as_rgb(im) for im in raw]
    native = normalised[0].size  # after EXIF rotation, before bounding
    bounded = [for_model(im, family, image_settings) for im in normalised]
    images = [im for im, _ in bounded]
    perceived = family.perceived_size(*images[0].size, image_settings)
    return ExampleImages(images, perceived, native, sum(d for _, d in bounded))


def prepare(rows, processor, family, settings, mode: str, image_settings: dict) -> Prepared:
    from medzoo.prompts import build_messages, render

    out = Prepared()
    for row in rows:
        ex = example_images(row, family, image_settings)
        imgs = ex.images
        out.downscaled += ex.downscaled
        messages, routes = build_messages(
            row, mode, settings, perceived_size=ex.perceived_size, native_size=ex.native_size, n_images=len(imgs)
        )
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
    from medzoo.preprocess import drop_reason, undecoded
    from medzoo.recipe import prompt_settings

    base = recipe_base(recipe)
    model_path, family, settings, processor = base.path, base.family, base.image_settings, base.processor
    ds = load_splits(recipe.data)[split]
    if not 0 <= index < len(ds):
        raise InvalidValue(f"--index {index}: split {split!r} has {len(ds)} examples")
    raw = undecoded(ds)[index]  # the row as stored: decoding a missing image is what is being checked
    reason = drop_reason(raw, {a.strip().lower() for a in recipe.data.drop_answers})
    if reason:
        raise InvalidValue(f"--index {index}: example {raw['id']!r} of split {split!r} is unusable ({reason})")
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
