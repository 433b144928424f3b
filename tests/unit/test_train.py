"""`medzoo train`: adapters that learn, resume after a kill, QLoRA on CPU, curricula, the data cache."""

import pytest
from conftest import run_medzoo


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "something").write_text("x")
    proc = run_medzoo("train", "phantom-tiny", "--set", f"run_dir={run}", check=False)
    assert proc.returncode == 1
    assert "already holds a run; pass --resume" in proc.stderr


def test_a_stage_can_train_on_some_question_categories_only():
    """`categories` narrows a stage to e.g. the location questions (the Gemma curriculum's first stage)."""
    from medzoo.data.sources import load_splits
    from medzoo.recipe import load_recipe
    from medzoo.train import TrainContext, prepare_split

    recipe = load_recipe("phantom-tiny-gemma", ["data.n_train=60", "data.n_val=6"])
    ctx = TrainContext.for_recipe(recipe)
    raw = load_splits(recipe.data)["train"]
    wanted = {row["id"] for row in raw if row["category"] in ("location", "size")}
    ds, _ = prepare_split(ctx, recipe.data, "train", None, categories=["location", "size"])
    assert 0 < len(ds) < len(raw)
    assert set(ds.with_format(None)["id"]) == wanted
    everything, _ = prepare_split(ctx, recipe.data, "train", None)  # a different cache entry
    assert len(everything) == len(raw)
    with pytest.raises(
        ValueError, match=r"categories \['locaton'\] match no train rows \(the dataset has: colour, counting"
    ):
        prepare_split(ctx, recipe.data, "train", None, categories=["locaton"])
