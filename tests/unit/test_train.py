"""`medzoo train`: adapters that learn, resume after a kill, QLoRA on CPU, curricula, the data cache."""

import pytest
from conftest import run_medzoo


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    proc = run_medzoo("train", "phantom-tiny", "--set", f"run_dir={run}", check=False)
    assert proc.returncode == 1
    assert "already holds a run; pass --resume" in proc.stderr


def test_only_training_output_makes_a_run(tmp_path):
    """Base-model bench results (`medzoo bench` before any training) or the empty checkpoint folder a
    --dry-run leaves must not make the first `medzoo train` refuse; a stage, checkpoint or adapter does."""
    from medzoo.train.runner import holds_training

    run = tmp_path / "run"
    (run / "bench" / "test-vllm").mkdir(parents=True)
    (run / "bench" / "test-vllm" / "summary.json").write_text("{}")
    (run / "checkpoints" / "00-main").mkdir(parents=True)
    assert not holds_training(run)
    (run / "checkpoints" / "00-main" / "checkpoint-10").mkdir()
    assert holds_training(run)
    other = tmp_path / "other"
    (other / "stages" / "00-main").mkdir(parents=True)
    assert not holds_training(other)
    (other / "stages" / "00-main" / "stage.json").write_text("{}")
    assert holds_training(other)


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
