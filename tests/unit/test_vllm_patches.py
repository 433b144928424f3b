"""medzoo.engines.vllm_patches: the in-process replacements give what the originals give, faster."""

import pytest

torch = pytest.importorskip("torch")
lora_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")

from medzoo.engines import vllm_patches  # noqa: E402

# The originals, kept before any test installs the replacements.
ORIGINAL = {name: getattr(lora_ops, name) for name in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")}
ORIGINAL_SGMV_SHRINK = lora_ops.sgmv_shrink


def _case(tokens=37, slots=3, rank=8, hidden=24, seed=0):
    """Weights with the last slot empty (as medzoo configures vLLM) and tokens on every slot and on none."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(slots, 1, rank, hidden, generator=g)
    b = torch.randn(slots, 1, hidden, rank, generator=g)
    a[-1] = 0
    b[-1] = 0
    indices = torch.randint(-1, slots - 1, (tokens,), generator=g)
    x = torch.randn(tokens, hidden, generator=g)
    return a, b, indices, x


@pytest.mark.parametrize("seed", [0, 1])
def test_shrink_and_expand_equal_the_per_token_originals(seed):
    a, b, indices, x = _case(seed=seed)
    for fn, weights, inp, width, extra in (
        ("bgmv_shrink", a, x, a.shape[2], (0.5,)),
        ("bgmv_expand", b, torch.randn(len(x), a.shape[2]), b.shape[2], (True,)),
        ("bgmv_expand_slice", b, torch.randn(len(x), a.shape[2]), b.shape[2] + 6, (3, b.shape[2], True)),
    ):
        start = torch.randn(len(x), width)
        want, got = start.clone(), start.clone()
        ORIGINAL[fn](inp, weights, want, indices, *extra)
        getattr(vllm_patches, fn)(inp, weights, got, indices, *extra)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_rows_without_an_adapter_get_zero_even_when_every_slot_is_taken():
    a, _, _, x = _case()
    a[-1] = 1.0  # every slot holds an adapter: the original reads slot -1 (the last) for base rows
    indices = torch.full((len(x),), -1)
    out = torch.ones(len(x), a.shape[2])
    vllm_patches.bgmv_shrink(x, a, out, indices, 1.0)
    assert torch.count_nonzero(out) == 0


def test_installed_ops_reach_the_prefill_path_through_sgmv():
    a, _, indices, x = _case(tokens=12)
    seq_lens = torch.tensor([5, 7])
    per_seq = torch.tensor([0, -1])
    want = torch.zeros(12, a.shape[2])
    ORIGINAL_SGMV_SHRINK(x, a, want, None, seq_lens, per_seq, 2, 7, 12, 2.0)
    assert vllm_patches.grouped_cpu_lora_ops() and vllm_patches.grouped_cpu_lora_ops()  # idempotent
    from vllm.lora.punica_wrapper import punica_cpu

    assert punica_cpu.bgmv_shrink is vllm_patches.bgmv_shrink
    got = torch.zeros(12, a.shape[2])
    lora_ops.sgmv_shrink(x, a, got, None, seq_lens, per_seq, 2, 7, 12, 2.0)
    torch.testing.assert_close(got, want)
    assert torch.count_nonzero(got[5:]) == 0 and torch.count_nonzero(got[:5]) > 0


def test_processor_is_built_around_the_tokenizer_the_caller_passes(monkeypatch):
    from transformers import AutoProcessor, AutoTokenizer

    from medzoo.models.loading import recipe_base
    from medzoo.recipe import load_recipe

    path = recipe_base(load_recipe("phantom-tiny")).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert vllm_patches.reuse_passed_tokenizer()
    loads = []
    real = AutoTokenizer.from_pretrained.__func__
    monkeypatch.setattr(
        AutoTokenizer, "from_pretrained", classmethod(lambda cls, *a, **k: loads.append(a) or real(cls, *a, **k))
    )
    processor = AutoProcessor.from_pretrained(path, tokenizer=tokenizer)
    assert processor.tokenizer is tokenizer and loads == []
    plain = AutoProcessor.from_pretrained(path)  # without the keyword: loaded from the folder as before
    assert plain.tokenizer is not tokenizer and len(loads) == 1
    text = "<|vision_start|><|image_pad|><|vision_end|>How many polyps?"
    assert processor.tokenizer(text)["input_ids"] == plain.tokenizer(text)["input_ids"]


def test_while_vllm_builds_an_engine_processors_without_a_tokenizer_share_one(monkeypatch):
    """Inside sharing_tokenizers() (vLLM's engine start) a processor loaded without `tokenizer=`
    reuses the one loaded or passed earlier for the same folder: one disk load, not one per
    processor. Outside it, medzoo's own loads read the folder as before."""
    from transformers import AutoProcessor, AutoTokenizer

    from medzoo.models.loading import recipe_base
    from medzoo.recipe import load_recipe

    path = recipe_base(load_recipe("phantom-tiny")).path
    assert vllm_patches.reuse_passed_tokenizer()
    loads = []
    real = AutoTokenizer.from_pretrained.__func__
    monkeypatch.setattr(
        AutoTokenizer, "from_pretrained", classmethod(lambda cls, *a, **k: loads.append(a) or real(cls, *a, **k))
    )
    monkeypatch.setattr(vllm_patches, "_shared", {})
    with vllm_patches.sharing_tokenizers():
        first = AutoProcessor.from_pretrained(path)
        second = AutoProcessor.from_pretrained(path)
    assert second.tokenizer is first.tokenizer and len(loads) == 1
    outside = AutoProcessor.from_pretrained(path)
    assert outside.tokenizer is not first.tokenizer and len(loads) == 2


def test_tokenizer_pool_starts_empty_and_still_gives_each_borrower_a_copy():
    """lazy_tokenizer_pool: no deep copy when vLLM's renderer wraps its tokenizer; the first use
    makes one, and the pooled tokenizer answers as the plain one does."""
    import copy

    from transformers import AutoTokenizer
    from vllm.renderers import hf as renderer_hf

    from medzoo.models.loading import recipe_base
    from medzoo.recipe import load_recipe

    path = recipe_base(load_recipe("phantom-tiny")).path
    plain = AutoTokenizer.from_pretrained(path)
    assert vllm_patches.lazy_tokenizer_pool() and vllm_patches.lazy_tokenizer_pool()  # idempotent
    copies = []
    real_deepcopy = copy.deepcopy

    def counting_deepcopy(x, memo=None):
        if memo is None and isinstance(x, type(plain)):
            copies.append(type(x).__name__)
        return real_deepcopy(x, memo)

    tokenizer = AutoTokenizer.from_pretrained(path)
    copy.deepcopy = counting_deepcopy
    try:
        pooled = renderer_hf.maybe_make_thread_pool(tokenizer, 2)
        assert copies == []
        text = "How many polyps are visible?"
        assert pooled.encode(text) == plain.encode(text) and len(copies) == 1
        assert pooled.decode(plain.encode(text)) == plain.decode(plain.encode(text)) and len(copies) == 1
    finally:
        copy.deepcopy = real_deepcopy
