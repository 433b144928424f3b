"""The tasks medzoo trains and scores: one record per task, read by prompts, bench, card and data.

Adding a task is one `Task` here (how its answer is formatted, parsed and scored, and which figure
is its headline), plus a generator in data/phantom.py if the embedded phantom should produce it.
"""

from __future__ import annotations

from dataclasses import dataclass

SHARE_MRE = ("share_mre_lt_0.2", "share MRE<0.2")  # share of answers within 20% relative error
MRE_INDEX = (("mre", "mre", "mean relative error"), ("share_mre_lt_0.2", "accuracy", "share MRE<0.2"))


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "text" (free answer), "measurement" (numbers in mm/degrees) or "box" (a bounding box)
    primary: tuple[str, str]  # (summary key, label): the headline figure, higher is better
    index_metrics: tuple[tuple[str, str, str], ...]  # (summary key, model-index type, readable name)
    values: int = 0  # numbers per answer, for measurements
    answer_format: str | None = None  # appended to the question; {origin} is the box origin
    decimals: int | None = None  # decimals of the phantom's reference answers


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "vqa",
            "text",
            ("exact_match", "exact match"),
            (("accuracy", "accuracy", "accuracy"), ("token_f1", "f1", "token F1")),
        ),
        Task(
            "distance",
            "measurement",
            SHARE_MRE,
            MRE_INDEX,
            values=1,
            answer_format="Answer with the distance in millimetres as a single number with one decimal, e.g. 23.4",
            decimals=1,
        ),
        Task(
            "angle",
            "measurement",
            SHARE_MRE,
            MRE_INDEX,
            values=1,
            answer_format="Answer with the angle in degrees as a single number with one decimal, e.g. 47.5",
            decimals=1,
        ),
        Task(
            "detection",
            "box",
            ("acc_iou_0.5", "acc@IoU0.5"),
            (("mean_iou", "iou", "mean IoU"), ("acc_iou_0.5", "accuracy", "accuracy at IoU 0.5")),
            answer_format="Answer with the box as [x1, y1, x2, y2] with two decimals, origin at the {origin} corner.",
            decimals=2,
        ),
        Task(
            "lesion-size",
            "measurement",
            SHARE_MRE,
            MRE_INDEX,
            values=2,
            answer_format="Answer as: major axis: <number> mm, minor axis: <number> mm",
            decimals=1,
        ),
    )
}
TASK_NAMES = tuple(TASKS)
