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
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("MEDZOO_TEST_HOME", str(REPO / ".medzoo-test"))
os.environ["MEDZOO_HOME"] = os.environ["MEDZOO_TEST_HOME"]


def pytest_report_header(config):
    # A full run writes ~10 GB (phantom images, preprocessed caches, runs); a full disk shows up as
    # scattered ENOSPC errors, so say up front how much room there is.
    import shutil

    home = Path(os.environ["MEDZOO_HOME"])
    free = shutil.disk_usage(home if home.exists() else REPO).free / 2**30
    return f"medzoo home: {home} ({free:.1f} GiB free)"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


def run_medzoo(*args, check=True, timeout=900, env=None, cwd=REPO):
    """Run the real `medzoo` console script in a subprocess (as a user would)."""
    medzoo = Path(sys.executable).parent / "medzoo"
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([str(medzoo), *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"medzoo {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc
