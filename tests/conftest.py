"""Shared test set-up: offline hub, one torch thread, and a persistent medzoo home for built models.

Zoo models and phantom datasets are deterministic, so tests share one cache (default
.medzoo-test/ in the repo, or $MEDZOO_TEST_HOME); tests that check determinism build into tmp_path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ["HF_HUB_OFFLINE"] = "1"
# The tests pin the CPU path (float32, eager vLLM) whatever the host has, and never find a real model
# in the machine's Hugging Face cache: an empty hub cache of their own (tests/hub_cache.py fills
# private ones under Hub ids where a test needs them).
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["HF_HUB_CACHE"] = str(Path(__file__).resolve().parent.parent / ".medzoo-test" / "empty-hf-hub")
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("MEDZOO_TEST_HOME", str(REPO / ".medzoo-test"))
os.environ["MEDZOO_HOME"] = os.environ["MEDZOO_TEST_HOME"]
MEDZOO = Path(sys.executable).parent / "medzoo"  # the console script, run as a user would

# Shared by unit and end-to-end tests.
TUNE_SMALL = [
    "tune.max_steps=4",
    "tune.eval_steps=2",
    "tune.pruner_startup_trials=3",
    "data.n_train=64",
    "data.n_val=8",
    "data.n_test=8",
]
SEED_TWINS = [
    "medgemma-kvasir-vqa-tiny",
    "medvision-qwen25vl-mixed-tiny",
    "qwen3vl-flare25-tiny",
    "qwen2vl-surgical-curriculum-tiny",
]
ZOO_NAMES = ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-gemma3"]


def pytest_report_header(config):
    # A full run writes ~10 GB (phantom images, preprocessed caches, runs); a full disk shows up as
    # scattered ENOSPC errors, so say up front how much room there is.
    import shutil

    home = Path(os.environ["MEDZOO_HOME"])
    free = shutil.disk_usage(home if home.exists() else REPO).free / 2**30
    return f"medzoo home: {home} ({free:.1f} GiB free)"


# `make test` runs two workers (`-n 2 --dist loadfile --no-loadscope-reorder`): each module stays on
# one worker, in this order. The learning module's three trainings are the suite's longest chain
# (~14 min on 2 cores), so it goes first and the other worker runs everything else meanwhile; the
# other end-to-end modules follow, heaviest first, then the unit tests in file order.
FIRST = [
    "test_learning_e2e.py",
    "test_bench_e2e.py",
    "test_export_e2e.py",
    "test_seed_recipes_e2e.py",
    "test_zoo_e2e.py",
    "test_tune_e2e.py",
    "test_distributed_e2e.py",
    "test_publish_e2e.py",
    "test_train_e2e.py",
    "test_cache_e2e.py",
]


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: FIRST.index(item.path.name) if item.path.name in FIRST else len(FIRST))


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


def run_medzoo(*args, check=True, timeout=900, env=None, cwd=REPO):
    """Run the real `medzoo` console script in a subprocess (as a user would)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([str(MEDZOO), *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)
    return check_ok(proc) if check else proc


def run_medzoo_together(
    jobs: dict[str, list[str]], slots: int = 2, timeout: int = 1800
) -> dict[str, subprocess.CompletedProcess]:
    """Run several `medzoo` commands side by side, `slots` at a time, in the order given.

    The long trainings each pin one torch thread (`train.threads: 1`), so on the 2-core CI machine
    two of them finish in about the wall time of the longer one. Output goes to files, not pipes,
    so a chatty progress bar cannot fill a pipe and stall a job.
    """
    import tempfile
    import time

    logs = Path(tempfile.mkdtemp(prefix="medzoo-jobs-"))
    waiting, running, done = list(jobs), {}, {}
    deadline = time.monotonic() + timeout
    try:
        while waiting or running:
            while waiting and len(running) < slots:
                name = waiting.pop(0)
                out, err = (logs / f"{name}.out").open("w"), (logs / f"{name}.err").open("w")
                running[name] = (
                    subprocess.Popen([str(MEDZOO), *jobs[name]], stdout=out, stderr=err, cwd=REPO),
                    out,
                    err,
                )
            for name, (proc, out, err) in list(running.items()):
                if proc.poll() is None:
                    continue
                out.close(), err.close()
                stdout, stderr = ((logs / f"{name}.{kind}").read_text(errors="replace") for kind in ("out", "err"))
                done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
                del running[name]
            if time.monotonic() > deadline:
                raise TimeoutError(f"still running after {timeout} s: {sorted(running)}")
            time.sleep(1)
    finally:
        for proc, out, err in running.values():
            proc.kill(), proc.wait(), out.close(), err.close()
        import shutil

        shutil.rmtree(logs, ignore_errors=True)
    return done


def check_ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        raise AssertionError(
            f"medzoo {' '.join(map(str, proc.args[1:]))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc
