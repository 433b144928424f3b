"""`run_bench`: validate the request, plan the pending generations, generate, score, report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from medzoo.bench.generate import bertscorer, generate_openai, generate_per_model, generate_vllm_lora, merge_for_vllm
from medzoo.bench.plan import choose_engine, choose_lora_mode, engine_settings, resolve_models, weight_bytes
from medzoo.bench.report import summarize, write_reports
from medzoo.bench.scoring import score_example
from medzoo.bench.store import append_records, finish, open_workdir
from medzoo.errors import InvalidValue, UnknownName


@dataclass
class BenchResult:
    out: Path
    summary: dict
    markdown: str
    records: list[dict] = field(default_factory=list)


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
    server: dict | None = None,
) -> BenchResult:
    """Evaluate base/tuned models x prompt modes on a recipe's split; write and return the results.

    `server` (engine "openai"): {"base_url": ..., "model": served base name or None, "api_key": ...}.
    """
    from medzoo.models.loading import recipe_base
    from medzoo.preprocess import DropCounter
    from medzoo.recipe import prompt_settings

    timing: dict[str, float] = {}
    t_all = time.perf_counter()
    modes, engine, split, limit = _checked_request(recipe, modes, engine, split, limit, server)
    names = list(models) if models else _default_models(recipe, adapters, log)
    bench_models = resolve_models(recipe, names, list(adapters or []))

    t = time.perf_counter()
    base = recipe_base(recipe)
    dropped = DropCounter()
    rows = _rows(recipe, split, limit, dropped)
    engine, engine_reason = _engine(engine, len(bench_models) * len(modes) * len(rows), base, lora_mode)
    mode_used = _serving_mode(engine, lora_mode, bench_models, base, log)
    ps = prompt_settings(recipe)
    spec = _spec(recipe, base, bench_models, modes, split, rows, engine, mode_used, ps)
    if engine == "openai":
        spec["server"] = {k: v for k, v in server.items() if k != "api_key"}
    out = Path(out) if out else recipe.run_path() / "bench" / f"{split}-{engine}"
    workdir, records = open_workdir(out, spec, overwrite, log)
    done = {(r["config"], r["id"]) for r in records}

    prepared = _prepared(rows, base, ps, modes, log)
    timing["setup_s"] = time.perf_counter() - t
    pending = _pending(bench_models, modes, rows, prepared, done)
    scorer = _ChunkScorer(rows, bertscorer(recipe.bench.bertscore_model), workdir / "records.jsonl", records, timing)
    if pending:
        log(
            f"bench: {len(pending)} generations ({len(bench_models)} models x {len(modes)} prompt modes x "
            f"{len(rows)} examples" + (f", {len(done)} already done" if done else "") + f"), engine {engine}"
            + (f", adapters as {mode_used}" if engine in ("vllm", "openai") else "")
            + (f" ({engine_reason})" if engine_reason.startswith("auto") else "")
        )  # fmt: skip
        ctx = {**_engine_context(recipe, base, prepared), "server": server}
        _generate(recipe, ctx, pending, bench_models, engine, mode_used, chunk_size, progress, scorer, timing, log)

    t = time.perf_counter()
    configs = [f"{m.label}/{mode}" for m in bench_models for mode in modes]
    summary = summarize(records, configs, bertscore_model=recipe.bench.bertscore_model)
    summary.update(recipe=recipe.name, base=base.path, split=split, n_examples=len(rows), engine=engine)
    summary["engine_reason"] = engine_reason
    summary.update(lora_mode=mode_used, dropped=dropped.as_dict(), timing=timing)
    timing["summary_s"] = time.perf_counter() - t  # before write_reports so summary.json has it
    timing["total_s"] = time.perf_counter() - t_all
    markdown = write_reports(workdir, summary)
    finish(workdir, out)
    if dropped.total():  # said once, at the end, where it is not lost among the progress bars
        log(f"bench: {dropped.describe()} from split {split!r}; the {len(rows)} usable example(s) were scored")
    return BenchResult(out=out, summary=summary, markdown=markdown, records=records)


def _prepared(rows, base, ps, modes, log) -> dict:
    """Every prompt rendered once per mode, through the same code as training."""
    from medzoo.inference import prepare

    prepared = {m: prepare(rows, base.processor, base.family, ps, m, base.image_settings) for m in modes}
    downscaled = prepared[modes[0]].downscaled
    if downscaled:
        log(
            f"bench: {downscaled} image(s) much larger than the model sees were downscaled to twice its input size first"
        )
    return prepared


def _default_models(recipe, adapters, log) -> list[str]:
    """base and tuned; base alone (said in one line) while the recipe has no trained adapter yet."""
    from medzoo.run import RunDir

    adapter = RunDir(recipe.run_path()).adapter
    if adapters or (adapter / "adapter_config.json").exists():
        return ["base", "tuned"]
    log(
        f"bench: no adapter trained yet for {recipe.name} ({adapter}): benching the base model only; "
        f"train one with `medzoo train {recipe.name}`"
    )
    return ["base"]


def _engine_context(recipe, base, prepared: dict) -> dict:
    """What every engine needs to load the base and generate: paths, processor, stops, limits."""
    from medzoo.models.loading import context_length, model_context, stop_token_ids

    needed = max(
        (
            context_length(
                base.processor, base.family, base.image_settings, p.prompts, p.images, recipe.bench.max_new_tokens
            )
            for p in prepared.values()
        ),
        default=None,
    )
    return {
        "base_path": base.path,
        "family": base.family,
        "processor": base.processor,
        "image_settings": base.image_settings,
        "max_new_tokens": recipe.bench.max_new_tokens,
        "stops": stop_token_ids(base.processor, base.family),
        "max_images": max((len(im) for p in prepared.values() for im in p.images), default=1),
        "engine": engine_settings(recipe, needed, model_context(base.path)),
    }


def _checked_request(recipe, modes, engine, split, limit, server) -> tuple[list[str], str, str, int | None]:
    """The options, with the recipe's bench section filling what was not given; bad values are one line."""
    from medzoo.bench.plan import BENCH_ENGINES
    from medzoo.prompts import PROMPT_MODES

    modes = list(modes or recipe.bench.prompts)
    for m in modes:
        if m not in PROMPT_MODES:
            raise InvalidValue(f"--prompts: expected some of {', '.join(PROMPT_MODES)}, got {m!r}")
    engine = engine or recipe.bench.engine
    if engine not in BENCH_ENGINES:
        raise InvalidValue(f"--engine: expected one of {', '.join(BENCH_ENGINES)}, got {engine!r}")
    if (engine == "openai") != bool(server and server.get("base_url")):
        raise InvalidValue(
            "--base-url goes with --engine openai (the server to evaluate), and --engine openai needs it"
        )
    return modes, engine, split or recipe.bench.split, limit or recipe.bench.limit


def _rows(recipe, split: str, limit: int | None, dropped) -> list:
    """The split's usable rows, cleaned as training cleans them (unreadable or missing images and
    dropped answers are skipped and counted in `dropped`, never a crash in an engine)."""
    from medzoo.data.sources import load_splits
    from medzoo.preprocess import usable_rows

    splits = load_splits(recipe.data)
    if split not in splits:
        raise UnknownName(f"--split {split!r}: the dataset has splits {', '.join(splits)}")
    rows = usable_rows(splits[split], limit, recipe.data.drop_answers, dropped)
    if not rows:
        raise InvalidValue(f"bench: split {split!r} has no usable example ({dropped.describe() or 'it is empty'})")
    return rows


def _engine(requested: str, generations: int, base, lora_mode: str) -> tuple[str, str]:
    """'auto' resolved for this work size and device (medzoo.bench.plan.choose_engine)."""
    from medzoo.engines.vllm_engine import has_cuda

    return choose_engine(requested, generations, base.family.name, on_cuda=has_cuda(), lora_mode=lora_mode)


def _serving_mode(engine: str, lora_mode: str, bench_models, base, log) -> str:
    """How adapters are served: 'lora' requests or 'merged' copies in vLLM, 'peft' in transformers,
    'served' by an OpenAI-compatible server (as it serves them: `medzoo serve` names them)."""
    if engine == "openai":
        return "served"
    if engine != "vllm":
        return "peft"
    from medzoo.engines.vllm_engine import has_cuda
    from medzoo.merge import adapter_vllm_blocker

    blockers = {
        m.label: r for m in bench_models if m.adapter and (r := adapter_vllm_blocker(m.adapter, base.family, base.path))
    }
    mode_used = choose_lora_mode(lora_mode, blockers, on_cuda=has_cuda(), weight_bytes=weight_bytes(base.path))
    for label, reason in blockers.items():
        log(f"bench: merging adapter {label!r} before serving: {reason}")
    if mode_used == "lora":
        from medzoo.adapters import vision_lora_keys

        for m in bench_models:
            if m.adapter and vision_lora_keys(m.adapter, base.family):
                log(f"bench: adapter {m.label!r} has LoRA on the vision tower/projector: served in the same engine")
    return mode_used


def _spec(recipe, base, bench_models, modes, split, rows, engine, mode_used, ps) -> dict:
    """What this bench evaluates; a results folder holding another spec is never mixed into."""
    from medzoo.merge import adapter_digest

    return {
        "recipe": recipe.name,
        "base": base.path,
        "models": {m.label: adapter_digest(m.adapter) if m.adapter else None for m in bench_models},
        "modes": modes,
        "split": split,
        "examples": [r["id"] for r in rows],
        "max_new_tokens": recipe.bench.max_new_tokens,
        "engine": engine,
        "lora_mode": mode_used,
        "prompts": {"static": ps.static, "adaptive": ps.adaptive},
        "image_settings": base.image_settings,
        "bertscore_model": recipe.bench.bertscore_model,
    }


def _pending(bench_models, modes, rows, prepared, done) -> list[dict]:
    """One request per (model, mode, example) not already in the results."""
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
                        "messages": p.messages[i],  # what an OpenAI-compatible server is sent
                        "routes": p.routes[i],
                    }
                )
    return pending


def _generate(recipe, ctx, pending, bench_models, engine, mode_used, chunk_size, progress, scorer, timing, log):
    from tqdm.auto import tqdm

    if engine == "vllm":
        from medzoo.engines.vllm_engine import DEFAULT_MAX_MODEL_LEN

        e = ctx["engine"]
        log(
            f"vLLM context {e['max_model_len'] or DEFAULT_MAX_MODEL_LEN} tokens, {ctx['max_images']} image(s) "
            f"per prompt, dtype {e['dtype']}"
        )
    with tqdm(total=len(pending), desc="bench", unit="gen", disable=not progress) as bar:
        if engine == "openai":
            generate_openai(ctx, pending, bench_models, chunk_size, bar, scorer, timing)
        elif engine == "vllm" and mode_used == "lora":
            generate_vllm_lora(ctx, pending, bench_models, chunk_size, bar, scorer, timing)
        else:
            merged_paths = merge_for_vllm(recipe, bench_models, log) if engine == "vllm" else {}
            generate_per_model(ctx, pending, bench_models, engine, chunk_size, bar, scorer, timing, merged_paths)
    timing["generations"] = len(pending)
    timing["generations_per_s"] = len(pending) / timing["generate_s"] if timing.get("generate_s") else None


class _ChunkScorer:
    """Called with each generated chunk: scores it, appends its records to disk (resume point)."""

    def __init__(self, rows, bert, records_file: Path, records: list[dict], timing: dict):
        self.rows, self.bert, self.records_file, self.records, self.timing = rows, bert, records_file, records, timing

    def __call__(self, chunk, texts) -> None:
        t = time.perf_counter()
        new = [self._record(req, text) for req, text in zip(chunk, texts)]
        for rec, f1 in zip(new, self.bert([r["prediction"] for r in new], [r["reference"] for r in new])):
            rec["metrics"]["bertscore_f1"] = f1
        append_records(self.records_file, new)
        self.records.extend(new)
        self.timing["scoring_s"] = self.timing.get("scoring_s", 0.0) + time.perf_counter() - t

    def _record(self, req: dict, text: str) -> dict:
        row = self.rows[req["index"]]
        task = row.get("task") or "vqa"
        parsed, scores = score_example(task, text, row["answer"])
        return {
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
