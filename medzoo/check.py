"""`medzoo check RECIPE`: the pre-flight the FLARE25 guide does by hand (test_data_loading).

Validates the annotation files, checks that every image exists and decodes, counts samples per
split and per dataset/task, and renders one processed sample (prompt string, token count, where
the loss falls) with the recipe's processor, so a broken dataset fails in seconds, not an hour
into training on a GPU.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from medzoo.bench.scoring import MEASUREMENT_VALUES
from medzoo.errors import InvalidValue


@dataclass
class CheckReport:
    counts: dict = field(default_factory=dict)  # split -> examples
    by_group: dict = field(default_factory=dict)  # split -> {dataset or task: examples}
    unreadable: list = field(default_factory=list)  # (split, id, reason)
    empty_answers: int = 0
    problems: list = field(default_factory=list)  # one line each: what train or bench would refuse or mis-handle
    sample: dict | None = None  # one rendered, processed example

    @property
    def ok(self) -> bool:
        return not self.unreadable and not self.problems and bool(self.counts)


def check(recipe, render_sample: bool = True, max_listed: int = 20, log=print) -> CheckReport:
    from medzoo.data.sources import load_splits
    from medzoo.preprocess import DropCounter, clean_rows, image_problem

    report = CheckReport()
    splits = load_splits(recipe.data)  # annotation errors surface here, as one line
    bad_answers = {a.strip().lower() for a in recipe.data.drop_answers}
    for split, ds in splits.items():
        report.counts[split] = len(ds)
        if recipe.data.mix:  # per registry dataset: its name is the id's prefix (<name>-<record>-<turn>)
            groups = Counter(i.rsplit("-", 2)[0] for i in ds["id"])
        else:
            groups = Counter(ds["task"]) if "task" in ds.column_names else Counter()
        report.by_group[split] = dict(groups)
        raw = ds.cast_column("image", _undecoded()) if "image" in ds.column_names else ds
        if "images" in ds.column_names:
            from datasets import Sequence

            raw = raw.cast_column("images", Sequence(_undecoded()))
        empty, unmeasurable = 0, []
        for row in raw:
            if row.get("answer") is None or str(row["answer"]).strip().lower() in bad_answers:
                empty += 1
            meta = _meta(row)
            if row.get("task") in MEASUREMENT_VALUES and not meta.get("pixel_spacing_mm"):
                unmeasurable.append(row.get("id"))
            for im in row.get("images") or [row.get("image")]:
                # a DICOM / NIfTI that failed conversion says why in its metadata (medzoo.data.records)
                reason = meta.get("unreadable") or image_problem(im)
                if reason:
                    report.unreadable.append((split, row.get("id"), reason))
        report.empty_answers += empty
        if len(ds) and empty == len(ds):
            report.problems.append(
                f"split {split!r}: all {len(ds)} answers are empty or in data.drop_answers; every example would be dropped"
            )
        if unmeasurable:
            report.problems.append(
                f"split {split!r}: {len(unmeasurable)} measurement example(s) have no pixel spacing (e.g. "
                f"{unmeasurable[0]!r}); set data.pixel_spacing_mm or give metadata.pixel_spacing_mm"
            )
    for split, n in report.counts.items():
        groups = ", ".join(f"{k} {v}" for k, v in sorted(report.by_group[split].items()))
        log(f"{split}: {n} examples" + (f" ({groups})" if groups else ""))
    log(f"answers dropped as empty/{'/'.join(recipe.data.drop_answers[1:]) or 'empty'}: {report.empty_answers}")
    _log_medical_files(splits, max_listed, log)
    if report.unreadable:
        log(f"unreadable images: {len(report.unreadable)}")
        for split, rid, reason in report.unreadable[:max_listed]:
            log(f"  {split} {rid}: {reason}")
    else:
        log("every image exists and decodes")
    for problem in report.problems:
        log(f"problem: {problem}")
    if render_sample and not report.problems:
        report.sample = _render_one(recipe, splits, clean_rows, DropCounter)
        s = report.sample
        log(
            f"processed sample {s['id']}: {s['tokens']} tokens, {s['loss_tokens']} carry loss, {s['images']} image(s) as {s['image_grid']}"
        )
        log("prompt:\n" + s["prompt"])
        log(f"answer tokens: {s['answer']!r}")
    return report


def _log_medical_files(splits, max_listed: int, log) -> None:
    """Per DICOM / NIfTI example: format, frame or slice, photometric interpretation, the windowing
    used, the pixel spacing and where it came from (medzoo.data.medical)."""
    import json

    lines, sources = [], Counter()
    for split, ds in splits.items():
        if "metadata" not in ds.column_names:
            continue
        for rid, text in zip(ds["id"], ds["metadata"]):
            meta = json.loads(text) if text else {}
            if meta.get("source_format") not in ("dicom", "nifti"):
                continue
            sources[meta.get("spacing_source", "unknown")] += 1
            where = (
                f"frame {meta['frame']} of {meta['frames']}"
                if meta.get("frames", 1) > 1
                else f"slice {meta['slice']} (axis {meta.get('slice_axis', 2)})"
                if "slice" in meta
                else "single frame"
            )
            spacing = meta.get("pixel_spacing_mm")
            spacing_text = f"{spacing[0]:g} x {spacing[1]:g} mm" if spacing else "unknown"
            photometric = f", {meta['photometric']}" if meta.get("photometric") else ""
            lines.append(
                f"  {split} {rid}: {meta['source_format']}, {where}{photometric}, windowing {meta.get('windowing')}, "
                f"spacing {spacing_text} ({meta.get('spacing_source', 'unknown')})"
            )
    if not lines:
        return
    log(f"medical images: {len(lines)} (spacing from: {', '.join(f'{k} {v}' for k, v in sorted(sources.items()))})")
    for line in lines[:max_listed]:
        log(line)
    if len(lines) > max_listed:
        log(f"  ... and {len(lines) - max_listed} more")


def _meta(row: dict) -> dict:
    import json

    text = row.get("metadata")
    try:
        return json.loads(text) if isinstance(text, str) and text else dict(text or {})
    except (ValueError, TypeError):
        return {}


def _undecoded():
    from datasets import Image

    return Image(decode=False)


def _render_one(recipe, splits, clean_rows, DropCounter) -> dict:
    from medzoo.models.loading import recipe_base
    from medzoo.preprocess import IGNORE, Encoder
    from medzoo.recipe import prompt_settings

    base = recipe_base(recipe)
    split = "train" if "train" in splits else next(iter(splits))
    ds = clean_rows(splits[split], recipe.data.drop_answers, DropCounter())
    if len(ds) == 0:
        raise InvalidValue(f"data: no usable example in split {split!r} to render")
    row = ds[0]
    enc = Encoder(base.processor, base.family, prompt_settings(recipe), recipe.prompts.train_mode, base.image_settings)
    prompt, _, images = enc.texts(row)
    out = enc.encode(row)
    answer_ids = [t for t, lab in zip(out["input_ids"], out["labels"]) if lab != IGNORE]
    grid = out.get("image_grid_thw")
    return {
        "id": row["id"],
        "prompt": prompt,
        "tokens": len(out["input_ids"]),
        "loss_tokens": len(answer_ids),
        "answer": base.processor.tokenizer.decode(answer_ids),
        "images": len(images),
        "image_grid": grid.tolist() if grid is not None else [list(im.size) for im in images],
    }
