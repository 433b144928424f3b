"""The export's parity check: the merged transformers model vs each GGUF, on the same bench examples.

"Garbled output after conversion" and "chat template differs from training" are what users of
every tool in this field report, so every export ends with this check:
- the GGUF's embedded chat template must render the training prompt for real examples, and
  llama.cpp must tokenize it into the same ids as the HF tokenizer;
- the exported model (each quantisation, with its mmproj, through the llama.cpp engine, i.e. the
  GGUF's template) answers the bench examples greedily, and its answers are compared with the
  merged transformers model's: exact agreement and the task metric;
- the f16 GGUF also answers through the real llama-server, started as the export README says.
The table is printed and written to parity.json (the model card shows it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medzoo.export.convert import LLAMA_CPP_PYTHON, ExportError

F16_MIN_AGREEMENT = 0.98
METRIC_TOLERANCE = 0.02  # a quantisation that moves the task metric more than this is flagged
# An f16 answer that differs where the merged model's own top choice led by less than this many
# logits is a near tie that f16 rounding can flip (measured: ~0.2 on the tiny models), not a
# conversion error; those show as disagreement where the model was sure.
NEAR_TIE_LOGITS = 0.5


def answer_margin(model, processor, prompt: str, images: list, reference: str, other: str, stop_id: int) -> float:
    """The merged model's lead, in logits, of the reference answer's token over the other answer's
    at the first token where the two answers part (teacher-forced on the reference before it)."""
    import torch

    tok = processor.tokenizer
    ref = tok(reference, add_special_tokens=False).input_ids + [stop_id]
    oth = tok(other, add_special_tokens=False).input_ids + [stop_id]
    k = next((i for i, (a, b) in enumerate(zip(ref, oth)) if a != b), None)
    if k is None:  # the same tokens once re-tokenised: nothing to separate them
        return 0.0
    inputs = processor(text=[prompt], images=[images] if images else None, return_tensors="pt")
    length = inputs["input_ids"].shape[1]
    prefix = torch.tensor([ref[:k]], dtype=torch.long)
    for key, value in list(inputs.items()):  # extend every per-token tensor (ids, mask, token types)
        if torch.is_tensor(value) and value.dim() == 2 and value.shape[1] == length:
            fill = (
                prefix
                if key == "input_ids"
                else torch.ones_like(prefix)
                if key == "attention_mask"
                else torch.zeros_like(prefix)
            )
            inputs[key] = torch.cat([value, fill.to(value.dtype)], dim=1)
    from medzoo.models.placement import to_model

    with torch.inference_mode():
        logits = model(**to_model(inputs, model)).logits[0, -1].float()
    return float(logits[ref[k]] - logits[oth[k]])


def gguf_tokenization_mismatch(path: Path, tokenizer, text: str) -> str | None:
    """None if llama.cpp tokenizes `text` (the rendered training prompt) into the same ids as the
    HF tokenizer, else where they first differ: a special token the GGUF lost its type for is
    spelled out as ordinary text, and the exported model answers garbage."""
    from llama_cpp import Llama

    from medzoo.engines.llama_cpp import quiet_native_stderr

    want = tokenizer(text, add_special_tokens=False).input_ids
    with quiet_native_stderr():
        vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
        got = vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        del vocab
    if got == want:
        return None
    i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return (
        f"token {i}: GGUF {got[i : i + 3]} vs HF {want[i : i + 3]} ({tokenizer.convert_ids_to_tokens(want[i : i + 3])})"
    )


def gguf_chat_template(path: Path) -> str | None:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    field = reader.fields.get("tokenizer.chat_template")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def render_with_template(template: str, messages: list[dict], bos_token: str = "", eos_token: str = "") -> str:
    """Render messages with a GGUF's template the way llama.cpp's jinja front ends do."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
    )


@dataclass
class _Reference:
    """The parity examples, prepared as training renders them, and the merged HF model's answers."""

    split: str
    rows: list
    prepared: object
    requests: list
    answers: list[str]
    metric: float


def _task_metric(rows, answers) -> float:
    from medzoo.bench import primary_score

    return sum(primary_score(r.get("task") or "vqa", a, r["answer"]) for r, a in zip(rows, answers)) / len(rows)


def training_example(messages: list[dict], answer: str) -> dict:
    """One parity example's system prompt (None: the chat template's default) and user text, for the
    printed llama.cpp commands, with the merged model's answer to it."""
    system = next((m["content"][0]["text"] for m in messages if m["role"] == "system"), None)
    user = next(m for m in messages if m["role"] == "user")
    text = "".join(c["text"] for c in user["content"] if c["type"] == "text")
    return {"system": system, "user_text": text, "answer": answer}


def _example(ref: _Reference, answers_of: dict, out_dir: Path) -> dict:
    """The first parity example for the printed commands: its image saved as out_dir/scan.png (the
    pixels the check sent), its prompt, and the answers of the merged model and of each GGUF."""
    ref.prepared.images[0][0].save(out_dir / "scan.png")
    example = training_example(ref.prepared.messages[0], ref.answers[0])
    gguf_answers = {q: a[0].strip() for q, a in answers_of.items()}
    return {**example, "image": "scan.png", "gguf_answers": gguf_answers, "prompt": ref.prepared.prompts[0]}


def _reference(recipe, merged: Path, base, n_parity: int, prompts_of) -> _Reference:
    from medzoo.data.sources import first_rows
    from medzoo.engines.base import requests_from
    from medzoo.engines.hf_engine import HFEngine
    from medzoo.inference import prepare
    from medzoo.models.loading import stop_token_ids
    from medzoo.recipe import prompt_settings

    split, rows = first_rows(recipe.data, recipe.bench.split, n_parity)
    mode = prompts_of.prompts.train_mode
    prepared = prepare(rows, base.processor, base.family, prompt_settings(prompts_of), mode, base.image_settings)
    requests = requests_from(prepared)
    hf = HFEngine.load(str(merged), base.processor, stop_token_ids(base.processor, base.family))
    answers = [r.strip() for r in hf.generate(requests, recipe.bench.max_new_tokens)]
    hf.close()
    return _Reference(split, rows, prepared, requests, answers, _task_metric(rows, answers))


def _differing(answers: list[str], ref: _Reference) -> tuple[float, list[str]]:
    """The share of answers equal to the merged model's, and the ids of the others."""
    differing = [ref.rows[i]["id"] for i, (a, r) in enumerate(zip(answers, ref.answers)) if a != r]
    return (len(ref.rows) - len(differing)) / len(ref.rows), differing  # exact: 49/50 is the 0.98 gate


def _quant_row(q: str, file: Path, answers: list[str], ref: _Reference, leave_output_tensor: bool, log) -> dict:
    agree, differing = _differing(answers, ref)
    metric = _task_metric(ref.rows, answers)
    log(
        f"export: {q}: {agree:.1%} of answers equal the merged HF model's; task metric {metric:.3f} (HF {ref.metric:.3f})"
    )
    if abs(metric - ref.metric) > METRIC_TOLERANCE + 1e-9:  # 0.74 - 0.72 is 0.020000000000000018
        hint = "" if leave_output_tensor or q == "f16" else "try --leave-output-tensor, or "
        log(f"export: warning: {q} moves the task metric by {metric - ref.metric:+.3f} (> {METRIC_TOLERANCE}); "
            f"{hint}compare on more examples (--parity N)")  # fmt: skip
    return {"quant": q, "file": file.name, "size_mb": file.stat().st_size / 1e6,
            "agreement": agree, "metric": metric, "examples_differing": differing[:10]}  # fmt: skip


def _template_checks(gguf: Path, processor, prepared) -> tuple[bool | None, str | None]:
    """The GGUF's own chat template must render what training rendered (image marker aside), and
    llama.cpp must tokenize it into the same ids (the special tokens kept their special type)."""
    template = gguf_chat_template(gguf)
    tok = processor.tokenizer
    template_ok = None
    if template:
        rendered = render_with_template(
            template, prepared.messages[0], bos_token=tok.bos_token or "", eos_token=tok.eos_token or ""
        )
        template_ok = rendered == prepared.prompts[0]
    return template_ok, gguf_tokenization_mismatch(gguf, tok, prepared.prompts[0])


def parity(
    recipe,
    merged: Path,
    base,
    files: dict,
    mmproj: Path,
    n_parity: int,
    leave_output_tensor: bool,
    log,
    prompts_of=None,
):
    """The merged HF model vs each GGUF on the same bench examples, greedy, through the engines.
    `prompts_of`: the recipe whose prompts training rendered (medzoo.run.prompts_source)."""
    from medzoo.engines.llama_cpp import LlamaCppEngine, image_token_budget
    from medzoo.models.loading import context_length

    prompts_of = prompts_of or recipe
    ref = _reference(recipe, merged, base, n_parity, prompts_of)
    budget = image_token_budget(base.processor)
    # llama.cpp's context holds the longest parity prompt (several large images can pass 2048 tokens)
    need = context_length(
        base.processor, base.family, base.image_settings, ref.prepared.prompts, ref.prepared.images,
        recipe.bench.max_new_tokens,
    )  # fmt: skip
    n_ctx = max(2048, -(-need // 256) * 256)
    table, answers_of = [], {}  # quant -> its answers, for the near-tie check below
    for q in files:
        gguf = LlamaCppEngine.load(files[q], mmproj, budget, n_ctx)
        answers_of[q] = gguf.generate(ref.requests, recipe.bench.max_new_tokens)
        gguf.close()
        table.append(_quant_row(q, files[q], answers_of[q], ref, leave_output_tensor, log))
    f16 = next(r for r in table if r["quant"] == "f16")
    f16["near_ties"] = _near_ties(merged, base.processor, base.family, ref, answers_of["f16"])
    f16["agreement_beyond_near_ties"] = f16["agreement"] + len(f16["near_ties"]) / len(ref.rows)
    if f16["near_ties"]:
        log(f"export: f16: {len(f16['near_ties'])} differing answers are near ties of the merged model "
            f"(its lead < {NEAR_TIE_LOGITS} logits)")  # fmt: skip
    log_file = merged.parent / "llama-server.log"
    server = _server_parity(files["f16"], mmproj, budget, ref, recipe.bench.max_new_tokens, f16["near_ties"], log_file)
    log(f"export: f16 through llama-server: {server['agreement']:.1%} of answers equal the merged HF model's")
    template_ok, token_mismatch = _template_checks(files["f16"], base.processor, ref.prepared)
    return {
        "examples": len(ref.rows),
        "split": ref.split,
        "prompt_mode": prompts_of.prompts.train_mode,
        "engine": "llama-cpp-python " + LLAMA_CPP_PYTHON + " (MTMDChatHandler, GGUF chat template)",
        "reference": "merged model, transformers greedy",
        "reference_metric": ref.metric,
        "mmproj": mmproj.name,
        "mmproj_size_mb": mmproj.stat().st_size / 1e6,
        "chat_template_matches_training": template_ok,
        "tokenization_matches_training": token_mismatch is None,
        "tokenization_mismatch": token_mismatch,
        "quantizations": table,
        "server": server,
        "image_tokens": list(budget) if budget else None,
        "example": _example(ref, answers_of, files["f16"].parent),
        "leave_output_tensor": leave_output_tensor,
        "f16_min_agreement": F16_MIN_AGREEMENT,
    }


def _server_parity(gguf: Path, mmproj: Path, budget, ref: _Reference, max_new_tokens: int, near_ties, log_file) -> dict:
    """The f16 GGUF through the real llama-server, started with the command the export README prints
    and asked through its OpenAI API (images as PNG data URIs), i.e. as users deploy it."""
    from medzoo.engines.openai_engine import OpenAIEngine
    from medzoo.serve import free_port, llama_server, running

    server = llama_server(gguf, mmproj, budget, "127.0.0.1", free_port())
    with running(server, log_file, timeout=300):
        answers = OpenAIEngine(server.base_url, {"base": "tuned"}, concurrency=4).generate(ref.requests, max_new_tokens)
    answers = [a.strip() for a in answers]
    agree, differing = _differing(answers, ref)
    return {
        "engine": "llama-server (OpenAI API) of the f16 GGUF, " + LLAMA_CPP_PYTHON + "'s llama.cpp",
        "agreement": agree,
        "agreement_beyond_near_ties": agree + sum(i in near_ties for i in differing) / len(ref.rows),
        "metric": _task_metric(ref.rows, answers),
        "examples_differing": differing[:10],
    }


def _near_ties(merged: Path, processor, family, ref: _Reference, answers) -> list[str]:
    """Ids where f16 differs and the merged model itself was nearly undecided. (Reloaded only then:
    a real model and its GGUF need not fit in memory together.)"""
    from medzoo.models.loading import load_model

    differing = [i for i, (a, r) in enumerate(zip(answers, ref.answers)) if a != r]
    if not differing:
        return []
    model = load_model(str(merged))
    stop = processor.tokenizer.convert_tokens_to_ids(family.end_of_turn)  # what ends a trained answer
    ties = []
    for i in differing:
        prompt, images = ref.prepared.prompts[i], ref.prepared.images[i]
        margin = answer_margin(model, processor, prompt, images, ref.answers[i], answers[i], stop)
        if margin < NEAR_TIE_LOGITS:
            ties.append(ref.rows[i]["id"])
    del model
    return ties


def raise_on_failed_parity(parity: dict, parity_file: Path) -> None:
    """The export folder is written either way (parity.json says why); a failed gate is an error."""
    f16 = next(r for r in parity["quantizations"] if r["quant"] == "f16")
    if parity["tokenization_mismatch"]:
        raise ExportError(
            f"llama.cpp tokenizes the training prompt differently from the HF tokenizer "
            f"({parity['tokenization_mismatch']}); see {parity_file}"
        )
    if f16["agreement_beyond_near_ties"] < F16_MIN_AGREEMENT:
        raise ExportError(
            f"f16 GGUF agrees with the merged model on only {f16['agreement']:.1%} of {parity['examples']} answers "
            f"({len(f16['near_ties'])} near ties; < {F16_MIN_AGREEMENT:.0%}); see {parity_file}"
        )
    server = parity.get("server")
    if server and server["agreement_beyond_near_ties"] < F16_MIN_AGREEMENT:
        raise ExportError(
            f"the f16 GGUF through llama-server agrees with the merged model on only {server['agreement']:.1%} of "
            f"{parity['examples']} answers (< {F16_MIN_AGREEMENT:.0%}); see {parity_file}"
        )
    if parity["chat_template_matches_training"] is False:
        raise ExportError(f"the GGUF's chat template renders a different prompt than training; see {parity_file}")
