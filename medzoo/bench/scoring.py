"""Per-example scoring: the text metrics for every answer, plus the task's own (medzoo.tasks)."""

from __future__ import annotations

from medzoo.tasks import TASKS

MEASUREMENT_VALUES = {t.name: t.values for t in TASKS.values() if t.kind == "measurement"}  # numbers per answer
# Primary figure per task for the plot: higher is better.
PRIMARY_METRIC = {t.name: t.primary for t in TASKS.values()}


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


# Figures that are shares of right answers (intervals for proportions apply); the rest are scores.
PROPORTIONS = frozenset(
    ("exact_match", "accuracy", "parse_rate", "acc_iou_0.5", "share_mre_lt_0.1", "share_mre_lt_0.2", "share_mre_lt_0.3")
)


def observations(task: str, scores: dict, reference: str) -> dict[str, list[float]]:
    """One example's contribution to each per-task figure of the summary (measurement tasks: one
    value per axis), so that a figure is the mean of its observations over the examples: the unit
    of medzoo.bench.stats' intervals and paired tests. A failed parse counts as a failure here
    exactly as in medzoo.metrics' summaries (relative error 1, absolute error |reference|, IoU 0)."""
    from medzoo import metrics

    if task in MEASUREMENT_VALUES:
        refs = metrics.parse_numbers(reference)[: MEASUREMENT_VALUES[task]]
        rel = [1.0 if r is None else r for r in scores["rel_error"]]
        absolute = [abs(ref) if a is None else a for a, ref in zip(scores["abs_error"], refs)]
        out = {"parse_rate": [float(r is not None) for r in scores["rel_error"]], "mae": absolute, "mre": rel}
        out.update({f"share_mre_lt_{t}": [float(x < t) for x in rel] for t in metrics.MRE_THRESHOLDS})
        return out
    if task == "detection":
        iou = scores["iou"]
        return {"parse_rate": [float(scores["parsed"])], "mean_iou": [iou], "acc_iou_0.5": [float(iou >= 0.5)]}
    return {
        "exact_match": [scores["exact_match"]],
        "accuracy": [scores["exact_match"]],
        "token_f1": [scores["token_f1"]],
    }
