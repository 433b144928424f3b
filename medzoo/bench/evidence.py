"""Which differences in a bench are real: intervals for every headline figure, and the paired
contrasts users read (tuned vs base in each prompt mode; static and adaptive vs none for each
model), with Holm-corrected p-values and the smallest difference each could detect.

The statistics are medzoo.bench.stats'; this module decides what they are computed on. Examples are
paired by id, and clustered by the image they ask about (the record's `image_key`).
"""

from __future__ import annotations

from medzoo.bench import stats
from medzoo.bench.scoring import PRIMARY_METRIC, PROPORTIONS, observations

OVERALL = ("exact_match", "token_f1", "rouge_l", "bertscore_f1")  # the main table's figures, all examples


def _cluster(record: dict) -> str:
    return record.get("image_key") or record["id"]


def _figures(recs: list[dict]) -> dict[str, dict[str, stats.Observations]]:
    """scope ("all", a task, or "task:category") -> figure -> observations, in record order."""
    values: dict[str, dict[str, list[float]]] = {}
    clusters: dict[str, dict[str, list[str]]] = {}

    def add(scope, key, vals, cluster):
        values.setdefault(scope, {}).setdefault(key, []).extend(vals)
        clusters.setdefault(scope, {}).setdefault(key, []).extend([cluster] * len(vals))

    for r in recs:
        m, c = r["metrics"], _cluster(r)
        for key in OVERALL:
            if m.get(key) is not None:
                add("all", key, [m[key]], c)
        task_values = observations(r["task"], m, r["reference"])
        for key, vals in task_values.items():
            add(r["task"], key, vals, c)
        if r.get("category") and "accuracy" in task_values:
            add(f"{r['task']}:{r['category']}", "accuracy", task_values["accuracy"], c)
    return {
        scope: {k: stats.Observations(v, clusters[scope][k], k in PROPORTIONS) for k, v in figs.items()}
        for scope, figs in values.items()
    }


def _contrast_pairs(configs: list[str]) -> list[tuple[str, str, str]]:
    """(label, A, B) for B - A: every tuned model vs base in each mode, then static / adaptive vs none."""
    models = list(dict.fromkeys(c.split("/")[0] for c in configs))
    modes = list(dict.fromkeys(c.split("/")[1] for c in configs))
    have = set(configs)
    pairs = []
    for mode in modes:
        for model in models:
            if model != "base" and {f"base/{mode}", f"{model}/{mode}"} <= have:
                pairs.append((f"{model} vs base ({mode} prompt)", f"base/{mode}", f"{model}/{mode}"))
    for model in models:
        for mode in modes:
            if mode != "none" and {f"{model}/none", f"{model}/{mode}"} <= have:
                pairs.append((f"{mode} vs none prompt ({model})", f"{model}/none", f"{model}/{mode}"))
    return pairs


def _aligned(a: list[dict], b: list[dict]) -> tuple[list[dict], list[dict]]:
    """The records of two configurations on the examples both have, in the same order."""
    by_id = {r["id"]: r for r in b}
    common = [r for r in a if r["id"] in by_id]
    return common, [by_id[r["id"]] for r in common]


def evidence(records: list[dict], configs: list[str], seed: int = stats.SEED) -> dict:
    """Intervals per configuration and figure, and the paired contrasts of each task's headline figure."""
    by_config = {c: [r for r in records if r["config"] == c] for c in configs}
    by_config = {c: recs for c, recs in by_config.items() if recs}
    intervals = {}
    for config, recs in by_config.items():
        intervals[config] = {
            scope: {key: stats.interval(obs, seed) for key, obs in figs.items()}
            for scope, figs in _figures(recs).items()
        }
    contrasts = []
    for label, a, b in _contrast_pairs(list(by_config)):
        ra, rb = _aligned(by_config[a], by_config[b])
        fa, fb = _figures(ra), _figures(rb)
        for task in sorted({r["task"] for r in ra}):
            key = PRIMARY_METRIC.get(task, ("exact_match", "exact match"))[0]
            if key in fa.get(task, {}) and key in fb.get(task, {}):
                c = stats.paired_contrast(fa[task][key], fb[task][key], seed)
                contrasts.append({"contrast": label, "a": a, "b": b, "task": task, "metric": key, **c})
    stats.holm(contrasts)
    images = len({r.get("image_key") or r["id"] for r in records})
    return {
        "detectable_share": stats.detectable_share(images),
        "images": images,
        "confidence": stats.CONFIDENCE,
        "alpha": stats.ALPHA,
        "power": stats.POWER,
        "resamples": stats.RESAMPLES,
        "seed": seed,
        "method": (
            "intervals: Wilson for a proportion when every example has its own image, else a percentile "
            "bootstrap over images; contrasts: paired on the same examples, McNemar's exact test for "
            "right/wrong figures (images not shared) else a permutation test within images, Holm-corrected "
            "over all contrasts shown; detectable: the smallest difference a paired test finds with 80% power"
        ),
        "intervals": intervals,
        "contrasts": contrasts,
    }
