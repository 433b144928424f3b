"""End to end (slow): `medzoo tune`: search space validation, trial recipes, memory across trials, resume after a kill."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import MEDZOO, TUNE_SMALL

from medzoo.recipe import load_recipe

pytestmark = pytest.mark.slow


def _finished_trials(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from trials where state in ('COMPLETE', 'PRUNED')").fetchone()[0]


@pytest.mark.slow
def test_ten_trials_keep_memory_flat_and_the_study_resumes_after_a_kill(tmp_path):
    from medzoo.tune import tune

    run_dir = tmp_path / "run"
    r = load_recipe("phantom-tiny", TUNE_SMALL + [f"run_dir={run_dir}"])
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
    proc = subprocess.Popen(
        [
            str(MEDZOO),
            "tune",
            "phantom-tiny",
            "--trials",
            "13",
            *sum((["--set", s] for s in TUNE_SMALL), []),
            "--set",
            f"run_dir={run_dir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
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


def test_a_diverging_trial_fails_alone_and_the_study_goes_on(tmp_path):
    from medzoo.tune import tune

    # lr 1e2..1e3 drives every trial's loss to NaN within a few steps (as in the training test)
    space = ["tune.space={train.lr: {type: float, low: 100.0, high: 1000.0, log: true}}", "tune.objective=eval_loss"]
    r = load_recipe("phantom-tiny", TUNE_SMALL + space + [f"run_dir={tmp_path / 'run'}"])
    said = []
    result = tune(r, trials=2, log=said.append)
    assert [t["state"] for t in result.trials] == ["FAIL", "FAIL"], result.trials
    assert [s.split(",")[0] for s in said if "diverged" in s] == ["trial 0: failed", "trial 1: failed"], said
    assert result.best_recipe is None and "trials: 0 complete, 0 pruned, 2 failed, 0 running" in said
