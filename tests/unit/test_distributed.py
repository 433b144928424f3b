"""Multi-process training: launcher command lines, and a 2-process DDP run (gloo on CPU) that
matches a single process with the same effective batch, with the data cache built once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from medzoo import launch


def test_shipped_launch_configs_and_commands():
    assert launch.config_names() == ["ddp", "fsdp", "zero2", "zero3", "zero3-offload"]
    cmd = launch.launch_command(
        ["phantom-tiny", "--set", "train.lr=1e-3"], 2, launcher_args="--nnodes 2 --node-rank 1 --master-addr 10.0.0.1"
    )
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    assert cmd[5:11] == ["--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1"]
    assert cmd[11:] == ["-m", "medzoo.cli", "train", "phantom-tiny", "--set", "train.lr=1e-3"]
    cmd = launch.launch_command(["r"], 8, config="zero3-offload")
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--num_processes", "8"]
    config = Path(cmd[cmd.index("--config_file") + 1])
    assert config.name == "zero3-offload.yaml" and "offload_param_device: cpu" in config.read_text()
    with pytest.raises(ValueError, match="--config zero4: expected one of ddp, fsdp, zero2, zero3, zero3-offload"):
        launch.launch_command(["r"], 2, config="zero4")
    with pytest.raises(ValueError, match="accelerate configs need --launcher accelerate"):
        launch.launch_command(["r"], 2, launcher="torchrun", config="ddp")


def test_launched_processes_get_the_users_own_train_arguments():
    argv = ["medzoo", "--debug", "train", "phantom-tiny", "--nproc", "2", "--set", "train.lr=1e-3",
            "--launcher=torchrun", "--resume", "--launcher-args", "--nnodes 2", "--config", "ddp"]  # fmt: skip
    assert launch.train_args_from_argv(argv) == ["phantom-tiny", "--set", "train.lr=1e-3", "--resume"]
    assert launch.train_args_from_argv(["medzoo", "bench", "x"]) is None
