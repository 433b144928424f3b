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
