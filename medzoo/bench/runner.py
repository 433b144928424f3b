"""`run_bench`: validate the request, plan the pending generations, generate, score, report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from medzoo.bench.evidence import evidence
from medzoo.bench.generate import bertscorer, generate_openai, generate_per_model, generate_vllm_lora, merge_for_vllm
from medzoo.bench.plan import choose_engine, choose_lora_mode, engine_settings, resolve_models, weight_bytes
from medzoo.bench.report import definitions, summarize, write_reports
from medzoo.bench.scoring import score_example
from medzoo.bench.store import (
    RECORDS,
    SCORING_VERSION,
    append_records,
    open_results,
    producer_digest,
    sibling_records,
)
from medzoo.errors import InvalidValue, UnknownName
from medzoo.locks import exclusive


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
    for m in bench_models:
        if m.run is not None:
            m.run.check_image_settings(base.image_settings, "bench")
    dropped = DropCounter()
    rows, fingerprint = _rows(recipe, split, limit, dropped)
    engine, engine_reason = _engine(engine, len(bench_models) * len(modes) * len(rows), base, lora_mode)
    mode_used = _serving_mode(engine, lora_mode, bench_models, base, log)
    ps = prompt_settings(recipe)
    served_by = {k: v for k, v in server.items() if k != "api_key"} if engine == "openai" else None
    producers = _producers(recipe, base, bench_models, engine, mode_used, ps, served_by)
    out = Path(out) if out else recipe.run_path() / "bench" / results_folder(split, engine, limit)
    with exclusive(out, "bench results"):  # one writer per results folder (medzoo.locks)
        if overwrite and (out / RECORDS).exists():
            (out / RECORDS).unlink()
        stored = open_results(out, log)

        prepared = _prepared(rows, base, ps, modes, log)
        image_keys = [_image_key(images) for images in prepared[modes[0]].images]
        timing["setup_s"] = time.perf_counter() - t
        requested = [f"{m.label}/{mode}" for m in bench_models for mode in modes]
        found = _matching(stored, producers, rows, prepared, image_keys)
        reused = _reuse(out, requested, producers, rows, prepared, image_keys, found, log)
        pending = _pending(bench_models, modes, rows, prepared, found)
        records: list[dict] = []
        scorer = _ChunkScorer(
            rows, image_keys, producers, bertscorer(recipe.bench.bertscore_model), out / RECORDS, records, timing
        )
        if pending:
            done = len(requested) * len(rows) - len(pending)
            log(
                f"bench: {len(pending)} generations ({len(bench_models)} models x {len(modes)} prompt modes x "
                f"{len(rows)} examples" + (f", {done} already answered" if done else "") + f"), engine {engine}"
                + (f", adapters as {mode_used}" if engine in ("vllm", "openai") else "")
                + (f" ({engine_reason})" if engine_reason.startswith("auto") else "")
            )  # fmt: skip
            ctx = {**_engine_context(recipe, base, prepared), "server": server}
            _generate(recipe, ctx, pending, bench_models, engine, mode_used, chunk_size, progress, scorer, timing, log)
        else:
            log(f"bench: every answer asked for is already in {out} ({len(requested) * len(rows)} records)")
        for r in records:
            found[(r["config"], r["id"])] = r

        t = time.perf_counter()
        # The folder's view: what was asked now, plus its other configurations still complete and current.
        configs = [c for c in producers if c in requested or all((c, row["id"]) in found for row in rows)]
        view = [found[(c, row["id"])] for c in configs for row in rows]
        summary = summarize(view, configs, bertscore_model=recipe.bench.bertscore_model)
        summary.update(recipe=recipe.name, base=base.path, split=split, n_examples=len(rows), engine=engine)
        summary["engine_reason"] = engine_reason
        summary.update(lora_mode=mode_used, dropped=dropped.as_dict(), timing=timing)
        summary["evidence"] = evidence(view, configs, seed=recipe.seed)
        summary["definitions"] = definitions(summary)
        summary["provenance"] = _provenance(
            recipe, bench_models, engine, mode_used, split, limit, rows, fingerprint, producers, configs,
            len(pending), reused,
        )  # fmt: skip
        timing["summary_s"] = time.perf_counter() - t  # before write_reports so summary.json has it
        timing["total_s"] = time.perf_counter() - t_all
        markdown = write_reports(out, summary)
        records = view
        if dropped.total():  # said once, at the end, where it is not lost among the progress bars
            log(f"bench: {dropped.describe()} from split {split!r}; the {len(rows)} usable example(s) were scored")
        return BenchResult(out=out, summary=summary, markdown=markdown, records=records)


def results_folder(split: str, engine: str, limit: int | None) -> str:
    """`<split>-<engine>`, and `-limit<N>` for a bench of the first N examples (the card only
    reports a bench of the whole split)."""
    return f"{split}-{engine}" + (f"-limit{limit}" if limit else "")


def _image_key(images) -> str:
    """The images a question asks about, by content: questions sharing an image are one cluster
    for the intervals (medzoo.bench.evidence), and a record is only reused for the same image."""
    import hashlib

    h = hashlib.blake2b(digest_size=8)
    for im in images:
        h.update(f"{im.mode}{im.size}".encode())
        h.update(im.tobytes())
    return h.hexdigest()


def _producers(recipe, base, bench_models, engine, mode_used, ps, served_by) -> dict[str, str]:
    """config -> digest of what produces its answers and scores (medzoo.bench.store), for every
    prompt mode of the models asked for (so the folder's other configurations can be checked)."""
    from medzoo.adapters import adapter_digest
    from medzoo.prompts import PROMPT_MODES

    system = {"none": None, "static": ps.static, "adaptive": ps.adaptive}
    base_id = _base_identity(recipe, base.path)
    out = {}
    for m in bench_models:
        digest = adapter_digest(m.adapter) if m.adapter else None
        for mode in PROMPT_MODES:
            producer = {
                "base": base_id,
                "adapter_digest": digest,
                "mode": mode,
                "system_prompt": system[mode],
                "image_settings": base.image_settings,
                "max_new_tokens": recipe.bench.max_new_tokens,
                "engine": engine,
                "lora_mode": mode_used,
                "dtype": recipe.bench.dtype if engine == "vllm" else None,
                "server": served_by,
                "bertscore_model": recipe.bench.bertscore_model,
                "scoring": SCORING_VERSION,
            }
            out[f"{m.label}/{mode}"] = producer_digest(producer)
    return out


def _base_identity(recipe, path: str) -> dict:
    """The base model by what it is, not where it lies: the recipe's name for it, the folder's
    name (a zoo build's name carries its seed and version, a Hub snapshot's is its commit) and its
    config. The same zoo model built under another MEDZOO_HOME is the same base."""
    import hashlib

    config = Path(path) / "config.json"
    digest = hashlib.sha256(config.read_bytes()).hexdigest()[:16] if config.exists() else None
    return {"name": recipe.base, "folder": Path(path).name, "config_sha256": digest}


def _matching(records, producers, rows, prepared, image_keys) -> dict[tuple[str, str], dict]:
    """(config, example id) -> a record that answers it: same producer, example id, image and
    reference, and the same prompt where this bench rendered that mode's prompts."""
    index = {row["id"]: i for i, row in enumerate(rows)}
    config_of = {producer: config for config, producer in producers.items()}
    found = {}
    for r in records:
        config, i = config_of.get(r.get("producer")), index.get(r["id"])
        if config is None or i is None:
            continue
        p = prepared.get(config.split("/")[1])
        if (r.get("image_key"), r["reference"]) == (image_keys[i], rows[i]["answer"]) and (
            p is None or r.get("prompt") == p.prompts[i]
        ):
            found[(config, r["id"])] = r
    return found


def _reuse(out, requested, producers, rows, prepared, image_keys, found, log) -> int:
    """Copy the answers other results folders of the run already hold for what is asked here."""
    missing = [c for c in requested if any((c, row["id"]) not in found for row in rows)]
    if not missing:
        return 0
    elsewhere = _matching(sibling_records(out), {c: producers[c] for c in missing}, rows, prepared, image_keys)
    new = [r for k, r in elsewhere.items() if k not in found]
    if new:
        append_records(out / RECORDS, new)
        found.update({k: r for k, r in elsewhere.items() if k not in found})
        log(f"bench: {len(new)} answers reused from the run's other bench folders (same adapter, prompts, settings)")
    return len(new)


def _provenance(recipe, bench_models, engine, mode_used, split, limit, rows, fingerprint, producers, configs,
                generated, reused) -> dict:  # fmt: skip
    """What produced this summary: the card and publish only report a bench of the adapter they
    ship on the whole split (medzoo.card.bench_for_card)."""
    from medzoo import __version__
    from medzoo.adapters import adapter_digest
    from medzoo.run import open_run

    trained = open_run(recipe, "bench")
    return {
        "medzoo_version": __version__,
        "recipe": recipe.name,
        "recipe_config_hash": recipe.config_hash(),
        "run": trained.record() if trained else None,
        "models": {
            m.label: {"adapter": m.adapter, "adapter_digest": adapter_digest(m.adapter) if m.adapter else None}
            for m in bench_models
        },
        "engine": engine,
        "lora_mode": mode_used,
        "split": split,
        "limit": limit,
        "whole_split": limit is None,
        "examples": len(rows),
        "data_fingerprint": fingerprint,
        "producers": {c: producers[c] for c in configs},
        "generated": generated,
        "reused_from_other_folders": reused,
    }


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


def _rows(recipe, split: str, limit: int | None, dropped) -> tuple[list, str | None]:
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
    return rows, getattr(splits[split], "_fingerprint", None)


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


def _pending(bench_models, modes, rows, prepared, found) -> list[dict]:
    """One request per (model, mode, example) not already answered."""
    pending = []
    for model in bench_models:
        for mode in modes:
            config = f"{model.label}/{mode}"
            p = prepared[mode]
            for i, row in enumerate(rows):
                if (config, row["id"]) in found:
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

    def __init__(self, rows, image_keys, producers, bert, records_file: Path, records: list[dict], timing: dict):
        self.rows, self.image_keys, self.producers, self.bert = rows, image_keys, producers, bert
        self.records_file, self.records, self.timing = records_file, records, timing

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
            "producer": self.producers[req["config"]],
            "image_key": self.image_keys[req["index"]],
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
