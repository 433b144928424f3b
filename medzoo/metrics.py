"""Answer normalisation and the metrics medzoo reports, as plain functions.

Text: exact match, token F1, ROUGE-L (LCS F-measure on normalised tokens). Measurements
(distance, angle, lesion axes): numbers parsed from free text; MAE and mean relative error (MRE)
and the share of examples with relative error < 0.1 / 0.2 / 0.3, over ALL examples (an answer
that cannot be parsed counts as a failure: relative error 1, absolute error |reference|), with
the parsed-only figures beside them. Detection: boxes parsed as four numbers; IoU (0 when
unparseable) and accuracy at IoU >= 0.5. Nothing here raises on unparseable model output.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation.replace(".", "").replace("-", ""))
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
# "x1: 0.5, y1: ..." / "xmin=...": coordinate names whose digits are not values.
_BOX_LABEL = re.compile(r"\b[xy]_?(?:[12]|min|max)\b", re.IGNORECASE)
MRE_THRESHOLDS = (0.1, 0.2, 0.3)


def normalize(text: str) -> str:
    """Lower-case, drop articles and punctuation (keeping decimal points and hyphens), squeeze spaces."""
    text = text.lower().strip().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    text = text.rstrip(".")
    return " ".join(text.split())


def exact_match(pred: str, ref: str) -> float:
    return float(normalize(pred) == normalize(ref))


def token_f1(pred: str, ref: str) -> float:
    """SQuAD-style token F1 on normalised text."""
    p, r = normalize(pred).split(), normalize(ref).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure (beta = 1) on normalised tokens."""
    p, r = normalize(pred).split(), normalize(ref).split()
    if not p or not r:
        return float(p == r)
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def parse_numbers(text: str) -> list[float]:
    return [float(m) for m in _NUMBER.findall(text or "")]


def parse_box(text: str) -> list[float] | None:
    """The first four numbers as [x1, y1, x2, y2], or None if there are fewer or they are not a box."""
    nums = parse_numbers(_BOX_LABEL.sub(" ", text or ""))
    if len(nums) < 4:
        return None
    x1, y1, x2, y2 = nums[:4]
    if x2 < x1 or y2 < y1:
        return None
    return [x1, y1, x2, y2]


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def measurement_errors(pred: str, ref: str, n_values: int = 1) -> list[tuple[float, float] | None]:
    """Per value (e.g. major and minor axis): (absolute error, relative error), None if unparsed."""
    refs = parse_numbers(ref)[:n_values]
    preds = parse_numbers(pred)
    out = []
    for i, r in enumerate(refs):
        if i >= len(preds) or not math.isfinite(preds[i]):
            out.append(None)
            continue
        err = abs(preds[i] - r)
        out.append((err, err / abs(r) if r else (0.0 if err == 0 else math.inf)))
    return out


def summarize_measurements(preds: list[str], refs: list[str], n_values: int = 1) -> dict:
    """MAE / MRE / share under MRE thresholds over all values, failures included, plus parsed-only."""
    all_abs, all_rel, ok_abs, ok_rel = [], [], [], []
    parsed = total = 0
    for pred, ref in zip(preds, refs):
        ref_vals = parse_numbers(ref)[:n_values]
        for err, r in zip(measurement_errors(pred, ref, n_values), ref_vals):
            total += 1
            if err is None:  # a failed parse is a failure, not a skipped example
                all_abs.append(abs(r))
                all_rel.append(1.0)
                continue
            parsed += 1
            all_abs.append(err[0])
            all_rel.append(err[1])
            ok_abs.append(err[0])
            ok_rel.append(err[1])
    out = {"n": total, "parse_rate": parsed / total if total else 0.0}
    for label, a, r in (("", all_abs, all_rel), ("parsed_only_", ok_abs, ok_rel)):
        out[f"{label}mae"] = sum(a) / len(a) if a else None
        out[f"{label}mre"] = sum(r) / len(r) if r else None
        for t in MRE_THRESHOLDS:
            out[f"{label}share_mre_lt_{t}"] = sum(x < t for x in r) / len(r) if r else None
    return out


def summarize_detection(preds: list[str], refs: list[str]) -> dict:
    """Mean IoU and accuracy at IoU >= 0.5 over all examples (unparseable = IoU 0), parse rate."""
    ious, parsed = [], 0
    for pred, ref in zip(preds, refs):
        box, gt = parse_box(pred), parse_box(ref)
        if box is None or gt is None:
            ious.append(0.0)
            continue
        parsed += 1
        ious.append(iou(box, gt))
    n = len(ious)
    return {
        "n": n,
        "parse_rate": parsed / n if n else 0.0,
        "mean_iou": sum(ious) / n if n else 0.0,
        "acc_iou_0.5": sum(i >= 0.5 for i in ious) / n if n else 0.0,
    }


# What each reported figure means, carried with the numbers into summary.json, the tables' footnotes
# and the model card: a figure is only comparable with another of the same definition.
DEFINITIONS = {
    "exact_match": "share of answers equal to the reference after normalisation (lower case, articles, "
    "punctuation and surrounding spaces removed; decimal points and hyphens kept); mean over examples",
    "accuracy": "closed questions: the exact match above, over the task's examples",
    "token_f1": "SQuAD token F1 between the normalised answer and reference (harmonic mean of token "
    "precision and recall; 0 when no token is shared); mean over examples",
    "rouge_l": "ROUGE-L F-measure (longest common token subsequence, beta 1) on normalised tokens; mean over examples",
    "bertscore_f1": "BERTScore F1 (greedy cosine matching of contextual token embeddings, no baseline "
    "rescaling) with the model named in the summary; mean over examples",
    "parse_rate": "share of answers (measurement: of values) from which the expected numbers could be parsed",
    "mae": "mean absolute error over every reference value (a value not parsed counts as an error of "
    "|reference|); first numbers in the answer, in order",
    "mre": "mean relative error |answer - reference| / |reference| over every reference value (a value not "
    "parsed counts as 1)",
    "share_mre_lt_0.1": "share of reference values answered within 10% relative error (each axis counted "
    "separately; a value not parsed is a failure)",
    "share_mre_lt_0.2": "share of reference values answered within 20% relative error (each axis counted "
    "separately; a value not parsed is a failure)",
    "share_mre_lt_0.3": "share of reference values answered within 30% relative error (each axis counted "
    "separately; a value not parsed is a failure)",
    "parsed_only_mre": "the mean relative error over parsed values only (beside parse_rate)",
    "mean_iou": "mean intersection over union of the answered box (first four numbers as x1, y1, x2, y2) "
    "with the reference box; an answer without a valid box counts as IoU 0",
    "acc_iou_0.5": "share of examples whose answered box has IoU >= 0.5 with the reference (no valid box: a failure)",
}
