"""End to end (slow): Multi-process training: launcher command lines, and a 2-process DDP run (gloo on CPU) that
matches a single process with the same effective batch, with the data cache built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import run_medzoo

pytestmark = pytest.mark.slow


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter" / "adapter_model.safetensors"))


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    # A fresh medzoo home (sharing the built zoo models) so the data cache is built in this test.
    home = tmp_path / "home"
    home.mkdir()
    (home / "zoo").symlink_to(Path(os.environ["MEDZOO_HOME"]).resolve() / "zoo")
    run_medzoo("zoo", "build", "tiny-qwen2.5-vl")
    env = {"MEDZOO_HOME": str(home)}
    common = [
        "--set",
        "data.n_train=64",
        "--set",
        "data.n_val=8",
        "--set",
        "data.n_test=8",
        "--set",
        "train.max_steps=6",
        "--set",
        "train.eval_steps=100",
        "--set",
        "train.lr=1e-2",
        "--set",
        "train.report_to=[none]",
    ]

    ddp = run_medzoo(
        "train",
        "phantom-tiny",
        *common,
        "--set",
        "train.batch_size=4",
        "--set",
        f"run_dir={tmp_path / 'ddp'}",
        "--nproc",
        "2",
        env=env,
    )
    single = run_medzoo(
        "train",
        "phantom-tiny",
        *common,
        "--set",
        "train.batch_size=8",
        "--set",
        f"run_dir={tmp_path / 'single'}",
        env=env,
    )

    import json

    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    # Rank 0 built each preprocessed split; rank 1 waited and read it.
    assert manifest["preprocess_cache_built_by_ranks"] == {"validation": [0], "train:00-main": [0]}
    assert "cache hit" in single.stdout  # and the single run reused what the DDP run built
    assert ddp.stdout.count("adapter written to") == 1  # rank 0 logs, once
    # Both ranks generated a share of the held-out rows (ZeRO-3 needs every rank in each forward);
    # rank 0 reports all of them, as the single process does.
    single_manifest = json.loads((tmp_path / "single" / "manifest.json").read_text())
    n_val = single_manifest["metrics"]["val_examples_generated"]
    assert n_val > 0 and manifest["metrics"]["val_examples_generated"] == n_val
    assert manifest["metrics"]["val_exact_match"] is not None

    a, b = _adapter(tmp_path / "single"), _adapter(tmp_path / "ddp")
    assert a.keys() == b.keys()
    for k in a:
        if a[k].norm() > 0:
            assert ((a[k] - b[k]).norm() / a[k].norm()).item() < 1e-4, k
    changed = sum(float(v.abs().sum()) for k, v in a.items() if "lora_B" in k)
    assert changed > 0  # the adapters did train
