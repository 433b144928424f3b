"""`medzoo tune`: search space validation, trial recipes, memory across trials, resume after a kill."""

from __future__ import annotations

import pytest
from conftest import TUNE_SMALL

from medzoo.recipe import RecipeError, apply_values, load_recipe

# Short trials on a small phantom: the point is the study machinery, not the values found.


def test_search_space_paths_are_validated(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "base: zoo:tiny-qwen2.5-vl\ntune:\n  space:\n    train.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3}\n"
    )
    with pytest.raises(RecipeError, match=r"bad.yaml: tune.space.train.learning_rate: not a recipe field"):
        load_recipe(str(bad))
    bad.write_text(
        "base: zoo:tiny-qwen2.5-vl\ntune:\n  space:\n    train.lr: {type: float, low: 0, high: 1.0e-3, log: true}\n"
    )
    with pytest.raises(RecipeError, match=r"tune.space.train.lr.low: expected a positive number on a log scale"):
        load_recipe(str(bad))
    bad.write_text("base: zoo:tiny-qwen2.5-vl\ntune:\n  space:\n    adapter.r: {type: categorical}\n")
    with pytest.raises(RecipeError, match=r"tune.space.adapter.r.choices: expected at least one choice"):
        load_recipe(str(bad))


def test_guide_space_is_the_default_and_values_apply():
    r = load_recipe("phantom-tiny-qlora")
    assert set(r.tune.space) == {"train.lr", "train.grad_accum", "adapter.r", "adapter.alpha", "adapter.dropout"}
    assert r.tune.space["train.grad_accum"].choices == [1, 2, 4, 8, 16]
    tuned = apply_values(r, {"train.lr": 3e-4, "adapter.r": 32}, run_dir="/tmp/x")
    assert (tuned.train.lr, tuned.adapter.r, tuned.run_dir) == (3e-4, 32, "/tmp/x")
    assert r.train.lr == 5e-3  # the original is untouched
    with pytest.raises(RecipeError, match="adapter.r: expected a positive integer"):
        apply_values(r, {"adapter.r": -1})


def test_trial_recipe_trains_short_without_checkpoints(tmp_path):
    from medzoo.tune import trial_recipe

    r = load_recipe("phantom-tiny", TUNE_SMALL)
    t = trial_recipe(r, {"train.lr": 1e-3}, tmp_path / "trial-000")
    assert t.train.max_steps == 4 and t.train.eval_steps == 2 and t.train.lr == 1e-3
    assert t.train.save_steps > 10**6 and t.train.report_to == ["none"]
    assert t.run_path() == tmp_path / "trial-000"
