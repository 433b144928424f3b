"""`medzoo card`: a Hugging Face model card (README.md) for a trained recipe.

Metadata through `huggingface_hub`'s ModelCardData (base model, library, pipeline tag, licence,
tags, datasets, and a `model-index` holding the bench results so the Hub renders them); the body
says what the model does, how it was trained, how it scored (every prompt mode, base vs tuned),
how the export compared with the merged model, how to run it, and what it must not be used for.

Everything comes from files the other commands wrote: manifest.json (train), the newest complete
bench summary.json (bench), parity.json (export). Missing parts are said to be missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from medzoo.tasks import TASKS

DISCLAIMER = (
    "**Not a medical device.** This model is a research artefact. It has not been validated for "
    "clinical use and must not be used to diagnose, treat or triage patients, or to replace the "
    "judgement of a qualified clinician. Its outputs can be wrong in ways that look plausible."
)
# Bench metrics that go into the Hub's model-index, per task: (key, metric type, readable name).
INDEX_METRICS = {t.name: list(t.index_metrics) for t in TASKS.values()}


def bench_for_card(run_dir: Path, adapter_digest: str | None) -> tuple[Path | None, str]:
    """The newest bench of *this* adapter on the whole split (vLLM preferred at equal age), and when
    there is none, why the others do not count: a card never shows numbers of another adapter, of a
    `--limit` subset, or of a bench without provenance."""
    import json

    fitting, skipped = [], []
    for path in (run_dir / "bench").glob("*/summary.json"):
        prov = json.loads(path.read_text()).get("provenance") or {}
        tuned = [m for label, m in (prov.get("models") or {}).items() if label != "base"]
        if not prov:
            skipped.append(f"{path.parent.name} (no provenance: made by an older medzoo)")
        elif not any(m.get("adapter_digest") == adapter_digest for m in tuned) or adapter_digest is None:
            skipped.append(f"{path.parent.name} (another adapter)")
        elif not prov.get("whole_split"):
            skipped.append(f"{path.parent.name} (only the first {prov.get('examples')} examples)")
        else:
            fitting.append(path.parent)
    if not fitting:
        return None, "; ".join(sorted(skipped))
    return max(fitting, key=lambda p: ((p / "summary.json").stat().st_mtime, p.name.endswith("-vllm"))), ""


def _dataset_label(recipe) -> tuple[str, str]:
    """(dataset type, readable name) for the model-index."""
    if recipe.data.source == "phantom":
        return "medzoo-phantom", f"medzoo phantom ({', '.join(recipe.data.tasks)})"
    return recipe.data.path, recipe.data.path


def card_data(recipe, manifest: dict, summary: dict | None, what: str = "adapter"):
    from huggingface_hub import EvalResult, ModelCardData

    tasks = sorted({t for c in (summary or {}).get("configs", []) for t in c["tasks"]}) or list(recipe.data.tasks)
    tags = ["medical", "medzoo", "vision-language", recipe.adapter.method, *tasks]
    base_model = None if recipe.base.startswith("zoo:") else recipe.base
    if base_model is None:
        tags.append("tiny-random-base")  # an offline zoo model: no Hub base to point at
    dataset_type, dataset_name = _dataset_label(recipe)
    results = []
    for c in (summary or {}).get("configs", []):
        if c["model"] == "base":
            continue  # the index describes this model; base figures are in the card's table
        for task, t in c["tasks"].items():
            for key, mtype, mname in INDEX_METRICS.get(task, []):
                if t.get(key) is None:
                    continue
                results.append(
                    EvalResult(
                        task_type="image-text-to-text",
                        task_name=task,
                        dataset_type=dataset_type,
                        dataset_name=dataset_name,
                        dataset_split=summary["split"],
                        metric_type=mtype,
                        metric_name=f"{mname} ({c['mode']} prompt)",
                        metric_config=c["mode"],
                        metric_value=round(float(t[key]), 4),
                    )
                )
    return ModelCardData(
        base_model=base_model,
        library_name="peft" if what == "adapter" else "transformers",
        pipeline_tag="image-text-to-text",
        license=recipe.license,
        tags=tags,
        datasets=None if recipe.data.source == "phantom" else [recipe.data.path],
        model_name=recipe.name,
        eval_results=results or None,
    )


def _training_section(recipe, manifest: dict) -> str:
    a, t = recipe.adapter, recipe.train
    rows = [
        (
            "base model",
            # a zoo base's local folder means nothing to readers of the card: say how to rebuild it
            f"`{recipe.base}`"
            + (
                f" (`medzoo zoo build {recipe.base[4:]} --seed {recipe.seed}`)"
                if recipe.base.startswith("zoo:")
                else ""
            ),
        ),
        ("adapter", f"{a.method}, r={a.r}, alpha={a.alpha}, dropout={a.dropout}"),
        (
            "target modules",
            ", ".join(a.target_modules)
            if isinstance(a.target_modules, list)
            else "every linear layer of the language model"
            + ("" if a.train_vision else " (vision tower and projector frozen)"),
        ),
        (
            "trainable parameters",
            f"{manifest.get('trainable_parameters', 0):,} of {manifest.get('total_parameters', 0):,}"
            + (
                f" ({100 * manifest['trainable_parameters'] / manifest['total_parameters']:.3f}%)"
                if manifest.get("total_parameters")
                else ""
            ),
        ),
        ("learning rate / scheduler", f"{t.lr} / {t.scheduler}, warmup ratio {t.warmup_ratio}"),
        ("steps / epochs", f"max_steps {t.max_steps}" if t.max_steps else f"{t.epochs} epochs"),
        ("batch", f"{t.batch_size} x grad. accumulation {t.grad_accum}"),
        ("precision", t.precision),
        ("prompt mode used in training", recipe.prompts.train_mode),
        (
            "data",
            f"{recipe.data.source}: tasks {', '.join(recipe.data.tasks)}"
            if recipe.data.source == "phantom"
            else f"{recipe.data.source}: {recipe.data.path}",
        ),
        ("data fingerprint / config hash", f"{manifest.get('data_fingerprint')} / {manifest.get('config_hash')}"),
        ("dropped rows", ", ".join(f"{k}: {v}" for k, v in (manifest.get("dropped_rows") or {}).items()) or "none"),
        ("medzoo version", manifest.get("medzoo_version", "?")),
    ]
    lines = ["| setting | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    stages = manifest.get("stages") or []
    if len(stages) > 1:
        lines += [
            "",
            "Curriculum stages (each starts from the previous stage's adapter):",
            "",
            "| stage | steps | train loss | eval loss |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {s['stage']} | {s.get('steps')} | {s.get('train_loss', float('nan')):.4f} | {s.get('eval_loss') or float('nan'):.4f} |"
            for s in stages
        ]
    return "\n".join(lines)


def _parity_section(parity: dict | None) -> str:
    if not parity:
        return "No GGUF export has been made for this model yet (`medzoo export RECIPE --gguf`)."
    lines = [
        f"GGUF answers compared with the merged transformers model on {parity.get('examples', '?')} bench examples (greedy):",
        "",
        "| quantisation | file size (MB) | exact answer agreement | task metric (GGUF) | task metric (merged HF) |",
        "|---|---|---|---|---|",
    ]
    for q in parity.get("quantizations", []):
        lines.append(
            f"| {q['quant']} | {q.get('size_mb', 0):.1f} | {q['agreement']:.3f} | {q.get('metric', float('nan')):.3f} | {parity.get('reference_metric', float('nan')):.3f} |"
        )
    server = parity.get("server")
    if server:
        lines.append(
            f"| f16 via llama-server (OpenAI API) | | {server['agreement']:.3f} | {server['metric']:.3f} | {parity.get('reference_metric', float('nan')):.3f} |"
        )
    return "\n".join(lines)


def _gguf_commands(recipe, parity: dict | None) -> str:
    """The export's own commands: its file names and image-token budget (or placeholders)."""
    from medzoo.export import run_commands

    parity = parity or {}
    files = {q["quant"]: q["file"] for q in parity.get("quantizations", [])}
    model = files.get("q8_0") or files.get("f16") or f"{recipe.name}-q8_0.gguf"
    mmproj = parity.get("mmproj") or f"mmproj-{recipe.name}-f16.gguf"
    block = run_commands(
        recipe.name, model, mmproj, parity.get("image_tokens"), parity.get("example"), recipe.bench.max_new_tokens
    )
    notes = "".join(f"\n- Ollama: {w}." for w in parity.get("ollama", []))
    return block + ("\n" + notes if notes else "")


def _vllm_serve_command(recipe, base_shown: str) -> str:
    """`medzoo serve`'s own command as `vllm serve ...`, with the base and adapter as a reader of the
    card names them (medzoo may run vLLM's CLI through a shim here: medzoo.engines.vllm_cli)."""
    from medzoo.serve import Server, vllm_server

    server = vllm_server(recipe)
    argv = ["vllm", *server.argv[server.argv.index("serve") :]]
    if "--chat-template" in argv:  # a local copy of the model's own template: the default there
        i = argv.index("--chat-template")
        del argv[i : i + 2]
    argv[2] = base_shown
    adapter = str(recipe.run_path() / "adapter")
    # replaced before quoting: the placeholder's < > must not reach the shell unquoted (redirections)
    argv = [a.replace(adapter, "<downloaded adapter folder>") for a in argv]
    return Server(argv, server.env, server.base_url).command_line()


def _vllm_section(recipe, base: str) -> str:
    from medzoo.errors import InvalidValue

    try:
        command = _vllm_serve_command(recipe, base)
    except InvalidValue as e:  # e.g. modules_to_save: vLLM cannot load it as LoRA
        return str(e).split(": ", 1)[1] + "."
    return f"""vLLM's OpenAI-compatible server, the adapter as the LoRA module `tuned`, with the flags that
reproduce training (`medzoo serve {recipe.name}` starts exactly this; `--max-lora-rank` from the
adapter, one LoRA slot spare, the image budget of training):

```bash
{command}
```"""


def _usage_section(recipe, repo_id: str, family_name: str | None, parity: dict | None = None) -> str:
    base = recipe.base if not recipe.base.startswith("zoo:") else f"<folder of `medzoo zoo build {recipe.base[4:]}`>"
    return f"""Transformers + peft:

```python
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{base}")
model = PeftModel.from_pretrained(model, "{repo_id}")
processor = AutoProcessor.from_pretrained("{repo_id}")
```

{_vllm_section(recipe, base)}

llama.cpp / Ollama (after `medzoo export {recipe.name} --gguf`):

{_gguf_commands(recipe, parity)}

Evaluate it yourself: `medzoo bench {recipe.name} --prompts none,static,adaptive`."""


def _evaluation_section(recipe, summary: dict | None, skipped: str = "") -> str:
    if not summary:
        why = f" (results not shown: {skipped})" if skipped else ""
        return f"Not benchmarked: no bench of this adapter on the whole split{why}; run `medzoo bench {recipe.name}`."
    from medzoo.bench import markdown_tables

    dropped = {k: v for k, v in (summary.get("dropped") or {}).items() if v}
    reasons = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in dropped.items())
    skipped = (
        f" {sum(dropped.values())} example(s) of the split were skipped as unusable ({reasons}) "
        "and are not in these figures."
        if dropped
        else ""
    )
    return (
        f"`medzoo bench` on the {summary['split']} split ({summary['n_examples']} examples, engine {summary['engine']}, greedy).{skipped} "
        "Rows are base and tuned model under each system-prompt mode: `none` (question only), `static` (an expert "
        "system prompt), `adaptive` (keyword-routed prompts per question category). Each figure has its 95% "
        "interval in brackets, and the paired contrasts say which differences this many examples can show; "
        "the definitions are under the tables. Measurement metrics count failed parses as failures.\n\n"
        + markdown_tables(summary)
        + "\n![bench results](plot.png)"
    )


def build_card(recipe, repo_id: str | None = None, what: str = "adapter", export_dir: Path | None = None):
    """The ModelCard for a trained recipe (needs <run_dir>/manifest.json)."""
    from huggingface_hub import ModelCard

    from medzoo.errors import MissingState
    from medzoo.run import RunDir, open_run

    run = recipe.run_path()
    trained = open_run(recipe, "card")
    if trained is None:
        raise MissingState(f"{RunDir(run).manifest}: no trained run; run `medzoo train {recipe.name}` first")
    manifest = trained.manifest.to_dict()
    bench_dir, skipped = bench_for_card(run, trained.manifest.adapter_digest)
    summary = json.loads((bench_dir / "summary.json").read_text()) if bench_dir else None
    parity_path = (export_dir or run / "export") / "parity.json"
    parity = json.loads(parity_path.read_text()) if parity_path.exists() else None
    repo_id = repo_id or f"<your-name>/{recipe.name}"
    data = card_data(recipe, manifest, summary, what)

    evaluation = _evaluation_section(recipe, summary, skipped)
    task_text = ", ".join(recipe.data.tasks)
    body = f"""
# {recipe.name}

{recipe.description or "A medzoo recipe."}

A {recipe.adapter.method.upper()} adapter for `{recipe.base}` trained with medzoo (`medzoo train {recipe.name}`) on {task_text}.
It answers questions about a single medical image in the format the recipe's prompts ask for.

> {DISCLAIMER}

## Training

{_training_section(trained.recipe, manifest)}

## Evaluation

{evaluation}

## Export parity (GGUF)

{_parity_section(parity)}

## How to use

{_usage_section(recipe, repo_id, manifest.get("family"), parity)}

## Limitations

- Evaluated only on the split above; performance on other scanners, sites, populations or question styles is unknown.
- Greedy decoding with at most {recipe.bench.max_new_tokens} new tokens was used for every figure on this card.
- Models built on the offline `zoo:` bases are tiny random-weight models for testing pipelines, not for images of patients.

## Medical-use disclaimer

{DISCLAIMER}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
