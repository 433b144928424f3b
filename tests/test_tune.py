"""`medzoo tune`: search space validation, trial recipes, memory across trials, resume after a kill."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import MEDZOO
from medzoo.recipe import RecipeError, apply_values, load_recipe

# Short trials on a small phantom: the point is the study machinery, not the values found.
SMALL = ["tune.max_steps=4", "tune.eval_steps=2", "tune.pruner_startup_trials=3", "data.n_train=64", "data.n_val=8", "data.n_test=8"]


def test_search_space_paths_are_validated(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: zoo:tiny-qwen2.5-vl\ntune:\n  space:\n    train.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3}\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: tune.space.train.learning_rate: not a recipe field"):
        load_recipe(str(bad))
    bad.write_text("base: zoo:tiny-qwen2.5-vl\ntune:\n  space:\n    train.lr: {type: float, low: 0, high: 1.0e-3, log: true}\n")
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

    r = load_recipe("phantom-tiny", SMALL)
    t = trial_recipe(r, {"train.lr": 1e-3}, tmp_path / "trial-000")
    assert t.train.max_steps == 4 and t.train.eval_steps == 2 and t.train.lr == 1e-3
    assert t.train.save_steps > 10**6 and t.train.report_to == ["none"]
    assert t.run_path() == tmp_path / "trial-000"


def _finished_trials(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from trials where state in ('COMPLETE', 'PRUNED')").fetchone()[0]


@pytest.mark.slow
def test_ten_trials_keep_memory_flat_and_the_study_resumes_after_a_kill(tmp_path):
    from medzoo.tune import tune

    run_dir = tmp_path / "run"
    r = load_recipe("phantom-tiny", SMALL + [f"run_dir={run_dir}"])
    result = tune(r, trials=10, log=lambda *a: None)

    assert len(result.trials) == 10 and all(t["state"] in ("COMPLETE", "PRUNED") for t in result.trials)
    assert any(t["state"] == "PRUNED" for t in result.trials)  # the median pruner acts on the reported eval losses
    rss = [t["rss_mb_after"] for t in result.trials]
    # One leaked tiny model is ~200 MB (measured when a pruned trial's traceback kept it alive).
    assert rss[-1] - rss[0] < 64, f"RSS grew across trials: {rss}"

    # The best values come back as a recipe that loads and trains as is.
    best = load_recipe(str(result.best_recipe))
    assert best.name == "phantom-tiny-tuned"
    for path, value in result.best_params.items():
        section, key = path.split(".")
        assert getattr(getattr(best, section), key) == value
    assert result.best_value == min(t["value"] for t in result.trials if t["state"] == "COMPLETE")

    # Kill a tune that aims for 13 trials once it has finished one more, then resume: the finished
    # trials are kept and the study completes to 13.
    db = run_dir / "tune" / "study.db"
    proc = subprocess.Popen([str(MEDZOO), "tune", "phantom-tiny", "--trials", "13", *sum((["--set", s] for s in SMALL), []), "--set", f"run_dir={run_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while _finished_trials(db) < 11 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _finished_trials(db) >= 11
    resumed = tune(r, trials=13, log=lambda *a: None)
    states = [t["state"] for t in resumed.trials]
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) == 13
    assert [t["params"] for t in resumed.trials[:10]] == [t["params"] for t in result.trials]
    assert yaml.safe_load((run_dir / "tune" / "best-recipe.yaml").read_text())["name"] == "phantom-tiny-tuned"
