"""`--resume` continues the run that was started, not a different one.

Train writes the resolved recipe into <run_dir>/recipe.yaml when a run starts (and again when it
finishes). `--resume` compares the recipe it is given with that file: a changed field is refused
with one line naming it, because the checkpoint, the manifest and recipe.yaml would otherwise say
the run used settings it only partly used (or fail deep inside the checkpoint loader, for a changed
adapter shape). `--accept-recipe-changes` lets training settings change (e.g. more steps, another
learning rate for the rest of the run); what the checkpoint's weights or the cached data depend on
(base, adapter, image, data, prompts) can never change on resume.
"""

from __future__ import annotations

from pathlib import Path

from medzoo.errors import StateMismatch

RECIPE_FILE = "recipe.yaml"
# Fields that describe or evaluate a run but do not change how it trains.
FREE = ("name", "description", "license", "run_dir", "bench.", "tune.", "train.threads")
# Fields the checkpoint's weights, optimiser state or cached data depend on. The learning rate is in
# the optimiser state too, but a resume applies the recipe's (medzoo.train.trainer.apply_lr).
FIXED = ("base", "seed", "adapter.", "image.", "data.", "prompts.", "train.optimizer", "train.weight_decay")


def record_started(run_dir: Path, recipe) -> None:
    import yaml

    from medzoo.atomic import write_text

    write_text(run_dir / RECIPE_FILE, yaml.safe_dump(recipe.to_dict(), sort_keys=False))


def check_resume(run_dir: Path, recipe, accept_changes: bool) -> None:
    """Refuse a --resume whose recipe differs from the one the run started with (see the module doc)."""
    import yaml

    path = run_dir / RECIPE_FILE
    if not path.exists():
        return  # a run started before medzoo recorded it, or killed before its first write
    from medzoo.run import changed_fields, flat_fields

    before_dict = yaml.safe_load(path.read_text())
    before, after = flat_fields(before_dict), flat_fields(recipe.to_dict())
    changed = [k for k in changed_fields(before_dict, recipe.to_dict()) if not k.startswith(FREE)]
    if not changed:
        return
    fixed = [k for k in changed if k.startswith(FIXED)]
    described = ", ".join(f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in (fixed or changed)[:6])
    if fixed:
        raise StateMismatch(
            f"train --resume: {run_dir} was started with another {', '.join(fixed)} ({described}); "
            "its checkpoints only fit that; start over with --overwrite or use another run_dir"
        )
    if not accept_changes:
        raise StateMismatch(
            f"train --resume: the recipe changed since {run_dir} started ({described}); resume with the recipe in "
            f"{path}, start over with --overwrite, or pass --accept-recipe-changes to continue with the new values"
        )
