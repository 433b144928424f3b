"""Loss masking, prompt identity between training and bench, spacing-aware prompts, data cleaning."""

import io
import json

import pytest
from conftest import ZOO_NAMES
from PIL import Image

from medzoo import zoo
from medzoo.data.phantom import PhantomConfig, make_example
from medzoo.models.loading import family_of, image_settings, load_processor
from medzoo.preprocess import IGNORE, Collator, DropCounter, Encoder, clean_rows
from medzoo.prompts import PromptSettings


def _row(task="vqa", index=0, split="train"):
    ex = make_example(PhantomConfig(tasks=(task,)), split, task, index)
    ex["image"] = Image.open(io.BytesIO(ex["image"]["bytes"]))
    return ex


def _encoder(name, mode="static"):
    path = str(zoo.build(name))
    family = family_of(path)
    settings = image_settings(family, None, path)
    proc = load_processor(path, settings)
    return Encoder(proc, family, PromptSettings(), mode, settings), proc


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_only_answer_and_end_of_turn_carry_loss(name):
    enc, proc = _encoder(name)
    tok = proc.tokenizer
    rows = [_row(index=i) for i in range(3)]
    encoded = [enc.encode(r) for r in rows]
    batch = Collator(tok.pad_token_id)(encoded)
    for b, (row, e) in enumerate(zip(rows, encoded)):
        labels = batch["labels"][b].tolist()
        ids = batch["input_ids"][b].tolist()
        answer_ids = tok.encode(row["answer"], add_special_tokens=False)
        expected = answer_ids + [tok.convert_tokens_to_ids(enc.family.end_of_turn)]
        carried = [i for i, lab in zip(ids, labels) if lab != IGNORE]
        assert carried == expected, (tok.convert_ids_to_tokens(carried), row["answer"])
        # The loss positions are exactly the answer span, right after the rendered prompt.
        first = labels.index(expected[0])
        assert all(lab == IGNORE for lab in labels[:first])
        assert labels[first : first + len(expected)] == expected
        assert all(lab == IGNORE for lab in labels[first + len(expected) :])
        # No image / vision special token and no padding ever carries loss.
        image_ids = enc.image_token_ids
        assert image_ids and not any(lab in image_ids for lab in labels)
        n_real = len(e["input_ids"])
        assert all(lab == IGNORE for lab in labels[n_real:])
        assert sum(1 for i in ids[:n_real] if i in image_ids) >= 16  # the image really is in the sequence


@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "tiny-gemma3"])
@pytest.mark.parametrize("mode", ["none", "static", "adaptive"])
def test_training_prompt_is_byte_identical_to_bench_prompt(name, mode):
    from medzoo.inference import prepare

    enc, proc = _encoder(name, mode)
    row = _row("distance", 3)
    train_prompt, full, _ = enc.texts(row)
    bench = prepare([row], proc, enc.family, enc.settings, mode, enc.image_settings)
    assert bench.prompts[0] == train_prompt
    assert full.startswith(train_prompt) and full[len(train_prompt) :].startswith(row["answer"])


def test_measurement_prompt_states_perceived_pixel_size():
    enc, _ = _encoder("tiny-qwen2.5-vl")
    row = _row("distance", 0)
    meta = json.loads(row["metadata"])
    prompt, _, _ = enc.texts(row)
    # The phantom is 128 px; Qwen's processor (max 112x112 px here) resizes it to 112 x 112.
    spacing = meta["pixel_spacing_mm"][0] * 128 / 112
    assert "the image is 112 x 112 pixels" in prompt
    assert f"one pixel is {spacing:.4f} mm wide" in prompt
    assert prompt.index("Task: ") < prompt.index("Additional information: ") < prompt.index("Format requirement: ")

    genc, _ = _encoder("tiny-gemma3")
    gprompt, _, _ = genc.texts(row)
    assert "the image is 112 x 112 pixels" in gprompt  # Gemma: fixed SigLIP input size


def test_unreadable_images_and_nan_answers_are_dropped_and_counted():
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    good = make_example(PhantomConfig(), "train", "vqa", 0)
    rows = [
        good,
        {**good, "id": "nan", "answer": "nan"},
        {**good, "id": "empty", "answer": "  "},
        {**good, "id": "broken", "image": {"bytes": b"not a png", "path": None}},
    ]
    feats = Features({k: ImageFeature() if k == "image" else Value("string") for k in good})
    ds = Dataset.from_list(rows, features=feats)
    counter = DropCounter()
    kept = clean_rows(ds, ["", "nan"], counter)
    assert kept["id"] == [good["id"]]
    assert counter.as_dict() == {"unreadable_image": 1, "empty_answer": 2}


@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-gemma3"])
def test_cache_pixels_are_uint8_and_decode_to_the_processors_floats(name):
    """The preprocessed cache stores 1 byte per pixel value, not 4; the collator gives training the
    processor's own floats back, bit for bit."""
    import numpy as np
    from PIL import Image

    from medzoo.models.loading import family_of, image_settings, load_processor
    from medzoo.preprocess import PixelCodec
    from medzoo.zoo import build

    path = str(build(name))
    proc = load_processor(path, image_settings(family_of(path), None, path))
    codec = PixelCodec.of(proc.image_processor)
    rng = np.random.default_rng(0)
    for w, h in [(112, 112), (300, 171)]:
        image = Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8"))
        pixels = proc.image_processor(images=[image], return_tensors="np")["pixel_values"].astype(np.float32)
        stored = codec.encode(pixels)
        assert stored.dtype == np.uint8 and stored.nbytes * 4 == pixels.nbytes
        assert np.array_equal(codec.decode(stored), pixels)  # bit for bit
    assert codec.encode(pixels + 0.01) is None  # not 8-bit values: refused, never silently rounded


def test_context_length_covers_exactly_what_the_processor_makes_of_two_images():
    """vLLM's max_model_len must hold the longest prompt: text + every image's tokens + the answer."""
    import numpy as np
    from PIL import Image

    from medzoo.models.loading import context_length, family_of, image_settings, image_token_bound, load_processor
    from medzoo.zoo import build

    path = str(build("tiny-qwen2.5-vl"))
    family = family_of(path)
    settings = {**image_settings(family, None, path), "max_pixels": 112 * 112 * 4}
    proc = load_processor(path, settings)
    images = [Image.fromarray(np.zeros((h, w, 3), "uint8")) for w, h in [(224, 224), (150, 300)]]
    content = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare the two scans."}]
    prompt = proc.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    actual = proc(text=[prompt], images=[images], return_tensors="np")["input_ids"].shape[1]
    need = context_length(proc, family, settings, [prompt], [images], answer=64)
    assert actual + 64 <= need <= actual + 64 + 2  # the two placeholder tokens counted once more
    assert image_token_bound(proc, family, settings) == 112 * 112 * 4 // (28 * 28)


@pytest.mark.parametrize("recipe_name", ["phantom-tiny", "phantom-tiny-gemma"])
def test_training_batches_from_the_cache_carry_the_processors_pixels(recipe_name, tmp_path, monkeypatch):
    """Cache -> datasets' numpy format (which widens uint8 to int64) -> collator: the batch the model
    trains on holds the processor's normalised floats, not 0..255."""
    import numpy as np

    from medzoo.recipe import load_recipe, prompt_settings
    from medzoo.train.data import TrainContext, prepare_split, raw_rows

    monkeypatch.setenv("MEDZOO_HOME", str(tmp_path))  # a cache built here, by this code
    recipe = load_recipe(recipe_name, ["data.n_train=8", "data.n_val=4", "data.n_test=4"])
    ctx = TrainContext.for_recipe(recipe)
    ds, hit = prepare_split(ctx, recipe.data, "validation", 2)
    assert not hit
    collate = Collator.for_processor(ctx.processor)
    batch = collate([ds[0]])
    first = ds.with_format(None)[0]["id"]
    row = next(r for r in raw_rows(ctx, recipe.data, "validation", 4) if r["id"] == first)
    enc = Encoder(ctx.processor, ctx.family, prompt_settings(recipe), recipe.prompts.train_mode, ctx.image_settings)
    expected = np.asarray(enc.encode(row)["pixel_values"], dtype=np.float32)
    assert batch["pixel_values"].dtype.is_floating_point
    assert np.array_equal(batch["pixel_values"].numpy(), expected)
