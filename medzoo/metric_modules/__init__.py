"""medzoo's metrics as `evaluate` modules, loaded by local path so they work offline.

`evaluate.load("rouge")` fetches its script from the Hub; these live in the package instead and
compute through `medzoo.metrics`, the same functions the per-example records use.
"""

from __future__ import annotations

from pathlib import Path

MODULES = ("medzoo_text", "medzoo_measurement", "medzoo_detection", "medzoo_bertscore")


def module_path(name: str) -> str:
    if name not in MODULES:
        raise ValueError(f"unknown metric module {name!r}; expected one of {', '.join(MODULES)}")
    return str(Path(__file__).with_name(f"{name}.py"))


def load(name: str, **kwargs):
    """`evaluate.load` of one of medzoo's modules, by local path."""
    import evaluate

    return evaluate.load(module_path(name), **kwargs)
