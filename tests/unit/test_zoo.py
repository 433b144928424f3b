"""Tiny zoo models: real tokenizers, deterministic bytes, load and generate in transformers and vLLM."""

import hashlib
from pathlib import Path

import pytest
from conftest import ZOO_NAMES

from medzoo import zoo

SAMPLES = [
    "Hello world",
    "What color is the abnormality?",
    "  major axis: 12.5 mm,\nminor axis: 3.0 mm",
    "Größe: 5 mm — 肝脏",
]


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir())}


@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "tiny-gemma3"])
def test_same_name_and_seed_same_bytes(tmp_path, name):
    a = zoo.build(name, seed=0, out=tmp_path / "a")
    b = zoo.build(name, seed=0, out=tmp_path / "b")
    assert _digest(a) == _digest(b)
    c = zoo.build(name, seed=1, out=tmp_path / "c")
    assert _digest(c)["model.safetensors"] != _digest(a)["model.safetensors"]


def test_qwen_tokenizer_matches_tiktoken_reference():
    """The rebuilt HF tokenizer encodes exactly like Qwen's own tiktoken BPE, specials at real ids."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from transformers import AutoTokenizer

    from medzoo.models.tokenizers import _qwen_tiktoken_path

    pattern = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    ref = tiktoken.Encoding(
        "qwen", pat_str=pattern, mergeable_ranks=load_tiktoken_bpe(str(_qwen_tiktoken_path())), special_tokens={}
    )
    tok = AutoTokenizer.from_pretrained(zoo.build("tiny-qwen2.5-vl"))
    for text in SAMPLES:
        assert tok.encode(text, add_special_tokens=False) == ref.encode(text)
    ids = tok.convert_tokens_to_ids(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
    )
    assert ids == [151643, 151644, 151645, 151652, 151653, 151655]


def test_gemma_tokenizer_matches_sentencepiece_and_has_gemma_specials():
    import sentencepiece as spm
    from transformers import AutoTokenizer

    folder = zoo.build("tiny-gemma3")
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tok = AutoTokenizer.from_pretrained(folder)
    for text in SAMPLES:
        assert tok.encode(text, add_special_tokens=False) == sp.encode(text)
    for special in [
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
        "\n",
        "\n\n\n\n",
    ]:
        assert len(tok.encode(special, add_special_tokens=False)) == 1, special
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)


def test_gemma_weights_use_hub_layout():
    from safetensors import safe_open

    with safe_open(zoo.build("tiny-gemma3") / "model.safetensors", "pt") as f:
        vision = [k for k in f.keys() if k.startswith("vision_tower.")]
    assert vision and all(k.startswith("vision_tower.vision_model.") for k in vision)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_loads_and_generates_in_transformers(name):
    import io

    from PIL import Image

    from medzoo.data.phantom import PhantomConfig, make_example
    from medzoo.inference import Prepared, answer
    from medzoo.models.loading import family_of, image_settings, load_processor
    from medzoo.prompts import build_messages, render

    path = str(zoo.build(name))
    family = family_of(path)
    proc = load_processor(path, image_settings(family, None, path))
    ex = make_example(PhantomConfig(), "test", "vqa", 0)
    img = Image.open(io.BytesIO(ex["image"]["bytes"])).convert("RGB")
    prompt = render(proc, build_messages(ex, "static")[0])
    assert prompt.count(family.image_tokens[0]) >= 1 or "<start_of_image>" in prompt
    out = answer("hf", path, Prepared([prompt], [[img]], [[]]), proc, family, max_new_tokens=4)
    assert len(out) == 1 and isinstance(out[0], str) and out[0]


def test_image_changes_the_answer_distribution():
    """The vision path is live: two different images give different next-token logits."""
    import io

    import torch
    from PIL import Image

    from medzoo.data.phantom import PhantomConfig, make_example
    from medzoo.models.loading import load_model, load_processor
    from medzoo.prompts import build_messages, render

    for name in ("tiny-qwen2.5-vl", "tiny-gemma3"):
        path = str(zoo.build(name))
        proc, model = load_processor(path), load_model(path)
        logits = []
        for i in (0, 1):
            ex = make_example(PhantomConfig(), "test", "vqa", i)
            ex["question"] = "What color is the abnormality?"
            img = Image.open(io.BytesIO(ex["image"]["bytes"])).convert("RGB")
            inputs = proc(text=[render(proc, build_messages(ex)[0])], images=[img], return_tensors="pt")
            with torch.no_grad():
                logits.append(model(**inputs).logits[0, -1])
        assert (logits[0] - logits[1]).abs().max() > 1e-3, name
