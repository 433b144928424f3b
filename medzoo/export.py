"""`medzoo export --gguf`: merged model -> GGUF text model + mmproj, quantised, checked against HF.

The converter is llama.cpp's own `convert_hf_to_gguf.py` (with its `conversion/` package and
`gguf-py`), taken from the `llama-cpp-python` sdist on PyPI of the same version as the installed
binding and cached under $MEDZOO_HOME; quantisation uses the binding's `llama_model_quantize`.

Every export ends with a parity check, because "garbled output after conversion" and
"chat template differs from training" are what users of every tool in this field report:
- the GGUF's embedded chat template must render the training prompt for real examples;
- the exported model (each quantisation, with its mmproj, through llama-cpp-python's multimodal
  chat handler, i.e. the GGUF's template) answers the bench examples greedily, and its answers
  are compared with the merged transformers model's: exact agreement and the task metric.
The table is printed and written to parity.json (the model card shows it).

On CPUs with AMX, llama.cpp's weight-repacking buffer types crash on quantised models
(a segfault while loading): models are loaded with `use_extra_bufts=False`, and the README's commands pass `-nr`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from medzoo.errors import InvalidValue, MedzooError

LLAMA_CPP_PYTHON = "0.3.36"
QUANTS = {"f16": 1, "q8_0": 7, "q4_k_m": 15}  # llama_ftype values (LLAMA_FTYPE_MOSTLY_*)
F16_MIN_AGREEMENT = 0.98
METRIC_TOLERANCE = 0.02  # a quantisation that moves the task metric more than this is flagged
# An f16 answer that differs where the merged model's own top choice led by less than this many
# logits is a near tie that f16 rounding can flip (measured: ~0.2 on the tiny models), not a
# conversion error; those show as disagreement where the model was sure.
NEAR_TIE_LOGITS = 0.5


class ExportError(MedzooError, RuntimeError):
    pass


# ---------------------------------------------------------------- llama.cpp's converter


def converter_dir(log=print) -> Path:
    """llama.cpp's converter files from the llama-cpp-python sdist, fetched once (pip download)."""
    from medzoo.atomic import build_dir
    from medzoo.paths import medzoo_home

    dest = medzoo_home() / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    if (dest / "convert_hf_to_gguf.py").exists():
        return dest
    log(f"export: fetching llama.cpp's converter (llama-cpp-python=={LLAMA_CPP_PYTHON} sdist) ...")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
                "-d",
                tmp,
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise ExportError(f"could not download the llama-cpp-python sdist: {proc.stderr.strip().splitlines()[-1:]}")
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
        wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
        with build_dir(dest) as out, tarfile.open(sdist) as tar:
            for m in tar.getmembers():
                rel = m.name[len(prefix) :] if m.name.startswith(prefix) else None
                if rel and rel.startswith(wanted) and (m.isfile() or m.isdir()):
                    m.name = rel
                    tar.extract(m, out, filter="data")
    return dest


def convert(model_dir: Path, out_file: Path, mmproj: bool, log=print) -> Path:
    """Run convert_hf_to_gguf.py (f16). Returns the file written."""
    conv = converter_dir(log)
    env = {**os.environ, "NO_LOCAL_GGUF": ""}  # medzoo.gguf_convert puts the converter's gguf-py on the path
    # through medzoo.gguf_convert: the converter plus medzoo's corrections (Gemma 3 layer pattern, template)
    cmd = [
        sys.executable,
        "-m",
        "medzoo.gguf_convert",
        str(conv),
        str(model_dir),
        "--outfile",
        str(out_file),
        "--outtype",
        "f16",
    ]
    if mmproj:
        cmd.append("--mmproj")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ExportError(
            f"convert_hf_to_gguf.py{' --mmproj' if mmproj else ''} failed on {model_dir}: {' | '.join(tail)}"
        )
    if mmproj:  # the converter prefixes the output name with "mmproj-"
        produced = out_file.with_name("mmproj-" + out_file.name)
        if produced.exists():
            produced.rename(out_file)
    if not out_file.exists():
        raise ExportError(f"convert_hf_to_gguf.py did not write {out_file}")
    return out_file


def quantize(src: Path, dest: Path, quant: str, leave_output_tensor: bool = False) -> Path:
    """llama.cpp's quantiser; `leave_output_tensor` keeps output.weight as in the f16 file
    (llama-quantize --leave-output-tensor): larger, and the logits stay closest to f16."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTS[quant]
    params.nthread = os.cpu_count() or 1
    params.quantize_output_tensor = not leave_output_tensor
    tmp = dest.with_name(f".{dest.name}.tmp")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.exists():
        raise ExportError(f"llama_model_quantize({quant}) failed on {src} (code {rc})")
    os.replace(tmp, dest)
    return dest


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
    with torch.inference_mode():
        logits = model(**inputs).logits[0, -1].float()
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


# ---------------------------------------------------------------- Ollama


OLLAMA_TEMPLATES = {
    "qwen_vl": (
        "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "gemma3": "<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n<start_of_turn>model\n",
}


def modelfile(family, model_file: str, mmproj_file: str, system: str | None) -> str:
    key = "gemma3" if family.name == "gemma3" else "qwen_vl"
    lines = [
        "# Ollama Modelfile written by medzoo export. Keep the mmproj FROM line: without it Ollama loses vision.",
        f"FROM ./{model_file}",
        f"FROM ./{mmproj_file}",
        f'TEMPLATE """{OLLAMA_TEMPLATES[key]}"""',
        f'PARAMETER stop "{family.end_of_turn}"',
        "PARAMETER temperature 0",
    ]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the command


@dataclass
class ExportResult:
    out: Path
    files: list[str]
    parity: dict


def export_gguf(
    recipe,
    quants: list[str] | None = None,
    out: str | None = None,
    n_parity: int = 50,
    log=print,
    leave_output_tensor: bool = False,
) -> ExportResult:
    """Merge (if needed), convert, quantise, write the Modelfile, and run the parity check."""
    from medzoo.atomic import swap_into_place, write_json, write_text
    from medzoo.merge import merge_for_recipe, write_added_tokens_decoder
    from medzoo.models.loading import recipe_base
    from medzoo.recipe import prompt_settings

    quants = _checked_quants(quants)
    final_dir = Path(out) if out else recipe.run_path() / "export"
    out_dir = final_dir.with_name(final_dir.name + ".partial")  # renamed into place when done
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    merged = recipe.run_path() / "merged"
    merge_for_recipe(recipe, out=str(merged), log=log)
    # The base's image settings and processor: what training used (the merged folder is not a zoo
    # folder, so resolving settings from it would lose the tiny models' resize and misstate the
    # pixel size in measurement prompts).
    base = recipe_base(recipe)
    write_added_tokens_decoder(merged, base.processor.tokenizer)  # a folder merged by an older medzoo lacks it

    t = time.perf_counter()
    files, mmproj = _convert_all(merged, out_dir, recipe.name, quants, leave_output_tensor, log)
    log(f"export: converted and quantised in {time.perf_counter() - t:.1f} s")
    parity = _parity(recipe, merged, base, files, mmproj, n_parity, leave_output_tensor, log)

    write_json(out_dir / "parity.json", parity)
    ps = prompt_settings(recipe)
    system = ps.static if parity["prompt_mode"] != "none" else _default_system(base.processor)
    default_quant = "q8_0" if "q8_0" in files else "f16"
    write_text(out_dir / "Modelfile", modelfile(base.family, files[default_quant].name, mmproj.name, system))
    budget = parity["image_tokens"]
    write_text(out_dir / "README.md", _run_snippet(recipe.name, files, mmproj, default_quant, budget))
    swap_into_place(out_dir, final_dir)
    _raise_on_failed_parity(parity, final_dir / "parity.json")
    listing = sorted(p.name for p in final_dir.iterdir() if p.is_file())
    return ExportResult(final_dir, listing, parity)


def _checked_quants(quants: list[str] | None) -> list[str]:
    quants = quants or list(QUANTS)
    for q in quants:
        if q not in QUANTS:
            raise InvalidValue(f"--quant: expected some of {', '.join(QUANTS)}, got {q!r}")
    return quants if "f16" in quants else ["f16", *quants]  # the other quantisations are made from it


def _convert_all(merged: Path, out_dir: Path, name: str, quants, leave_output_tensor: bool, log):
    files = {"f16": convert(merged, out_dir / f"{name}-f16.gguf", mmproj=False, log=log)}
    mmproj = convert(merged, out_dir / f"mmproj-{name}-f16.gguf", mmproj=True, log=log)
    for q in quants:
        if q != "f16":
            files[q] = quantize(files["f16"], out_dir / f"{name}-{q}.gguf", q, leave_output_tensor)
    return files, mmproj


def _parity(recipe, merged: Path, base, files: dict, mmproj: Path, n_parity: int, leave_output_tensor: bool, log):
    """The merged HF model vs each GGUF on the same bench examples, greedy, through the engines."""
    from medzoo.bench import primary_score
    from medzoo.data.sources import first_rows
    from medzoo.engines.base import requests_from
    from medzoo.engines.hf_engine import HFEngine
    from medzoo.engines.llama_cpp import LlamaCppEngine, image_token_budget
    from medzoo.inference import prepare
    from medzoo.models.loading import stop_token_ids
    from medzoo.recipe import prompt_settings

    processor, family = base.processor, base.family
    split, rows = first_rows(recipe.data, recipe.bench.split, n_parity)
    mode = recipe.prompts.train_mode
    prepared = prepare(rows, processor, family, prompt_settings(recipe), mode, base.image_settings)
    requests = requests_from(prepared)
    hf = HFEngine.load(str(merged), processor, stop_token_ids(processor, family))
    reference = [r.strip() for r in hf.generate(requests, recipe.bench.max_new_tokens)]
    hf.close()

    def task_metric(answers):
        return sum(primary_score(r.get("task") or "vqa", a, r["answer"]) for r, a in zip(rows, answers)) / len(rows)

    budget = image_token_budget(processor)
    ref_metric = task_metric(reference)
    table, answers_of = [], {}  # quant -> its answers, for the near-tie check below
    for q in files:
        gguf = LlamaCppEngine.load(files[q], mmproj, budget)
        answers_of[q] = answers = gguf.generate(requests, recipe.bench.max_new_tokens)
        gguf.close()
        agree = sum(a == r for a, r in zip(answers, reference)) / len(rows)
        metric = task_metric(answers)
        differing = [rows[i]["id"] for i, (a, r) in enumerate(zip(answers, reference)) if a != r]
        table.append({"quant": q, "file": files[q].name, "size_mb": files[q].stat().st_size / 1e6,
                      "agreement": agree, "metric": metric, "examples_differing": differing[:10]})  # fmt: skip
        log(
            f"export: {q}: {agree:.1%} of answers equal the merged HF model's; task metric {metric:.3f} (HF {ref_metric:.3f})"
        )
        if abs(metric - ref_metric) > METRIC_TOLERANCE + 1e-9:  # 0.74 - 0.72 is 0.020000000000000018
            hint = "" if leave_output_tensor or q == "f16" else "try --leave-output-tensor, or "
            log(f"export: warning: {q} moves the task metric by {metric - ref_metric:+.3f} (> {METRIC_TOLERANCE}); "
                f"{hint}compare on more examples (--parity N)")  # fmt: skip
    f16 = next(r for r in table if r["quant"] == "f16")
    f16["near_ties"] = _near_ties(merged, processor, family, prepared, rows, answers_of["f16"], reference)
    f16["agreement_beyond_near_ties"] = f16["agreement"] + len(f16["near_ties"]) / len(rows)
    if f16["near_ties"]:
        log(f"export: f16: {len(f16['near_ties'])} differing answers are near ties of the merged model "
            f"(its lead < {NEAR_TIE_LOGITS} logits)")  # fmt: skip

    # The GGUF's own chat template must render what training rendered (image marker aside), and
    # tokenize it into the same ids (the special tokens kept their special type).
    template = gguf_chat_template(files["f16"])
    tok = processor.tokenizer
    template_ok = (
        render_with_template(
            template, prepared.messages[0], bos_token=tok.bos_token or "", eos_token=tok.eos_token or ""
        )
        == prepared.prompts[0]
        if template
        else None
    )
    token_mismatch = gguf_tokenization_mismatch(files["f16"], tok, prepared.prompts[0])
    return {
        "examples": len(rows),
        "split": split,
        "prompt_mode": mode,
        "engine": "llama-cpp-python " + LLAMA_CPP_PYTHON + " (MTMDChatHandler, GGUF chat template)",
        "reference": "merged model, transformers greedy",
        "reference_metric": ref_metric,
        "mmproj": mmproj.name,
        "mmproj_size_mb": mmproj.stat().st_size / 1e6,
        "chat_template_matches_training": template_ok,
        "tokenization_matches_training": token_mismatch is None,
        "tokenization_mismatch": token_mismatch,
        "quantizations": table,
        "image_tokens": list(budget) if budget else None,
        "leave_output_tensor": leave_output_tensor,
        "f16_min_agreement": F16_MIN_AGREEMENT,
    }


def _near_ties(merged: Path, processor, family, prepared, rows, answers, reference) -> list[str]:
    """Ids where f16 differs and the merged model itself was nearly undecided. (Reloaded only then:
    a real model and its GGUF need not fit in memory together.)"""
    from medzoo.models.loading import load_model

    differing = [i for i, (a, r) in enumerate(zip(answers, reference)) if a != r]
    if not differing:
        return []
    model = load_model(str(merged))
    stop = processor.tokenizer.convert_tokens_to_ids(family.end_of_turn)  # what ends a trained answer
    ties = []
    for i in differing:
        margin = answer_margin(
            model, processor, prepared.prompts[i], prepared.images[i], reference[i], answers[i], stop
        )
        if margin < NEAR_TIE_LOGITS:
            ties.append(rows[i]["id"])
    del model
    return ties


def _raise_on_failed_parity(parity: dict, parity_file: Path) -> None:
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
    if parity["chat_template_matches_training"] is False:
        raise ExportError(f"the GGUF's chat template renders a different prompt than training; see {parity_file}")


def _default_system(processor) -> str | None:
    """The system prompt the chat template adds when none is given (Qwen: 'You are a helpful assistant.')."""
    probe = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "x"}]}], tokenize=False, add_generation_prompt=True
    )
    marker = "<|im_start|>system\n"
    if marker in probe:
        return probe.split(marker, 1)[1].split("<|im_end|>", 1)[0]
    return None


def run_commands(name: str, model: str, mmproj: str, budget: tuple[int, int] | list[int] | None) -> str:
    """The bash block that runs an export with llama.cpp and Ollama (export README, model card)."""
    flags = f" --image-min-tokens {budget[0]} --image-max-tokens {budget[1]}" if budget else ""
    return f"""```bash
# llama.cpp (-nr: no weight repacking; needed on AMX CPUs for quantised models)
# --image-*-tokens: resize images as training did (llama.cpp's Qwen-VL default budget differs)
llama-mtmd-cli -m {model} --mmproj {mmproj} --image scan.png -p "Is there a polyp in the image?" --temp 0 -nr{flags}
llama-server -m {model} --mmproj {mmproj} --temp 0 -nr{flags}
# Ollama (keep both FROM lines of the Modelfile)
ollama create {name} -f Modelfile
ollama run {name} "Is there a polyp in the image? ./scan.png"
```"""


def _run_snippet(name: str, files: dict, mmproj: Path, default_quant: str, budget: tuple[int, int] | None) -> str:
    return f"""# {name}: GGUF export

Files: {", ".join(p.name for p in files.values())}, {mmproj.name} (vision projector), Modelfile, parity.json.

{run_commands(name, files[default_quant].name, mmproj.name, budget)}
"""
