"""Multi-process training: `medzoo train RECIPE --nproc N [--launcher accelerate --config NAME]`.

medzoo does not implement distribution; it re-runs its own `train` command under an existing
launcher, which starts one process per GPU (or CPU worker) and sets RANK / WORLD_SIZE:

    torchrun     plain DDP (gloo on CPU, nccl on GPUs), `--nproc-per-node N`
    accelerate   `accelerate launch --config_file <shipped config>`: ddp, fsdp, zero2, zero3,
                 zero3-offload (the DeepSpeed ones need `pip install deepspeed`)

Inside, the transformers Trainer does the distributed work; medzoo's own code only has to be
rank-aware (`rank()`, `is_main()`): rank 0 writes adapters, manifests and logs, and builds the
data caches while the others wait, then reads them.
"""

from __future__ import annotations

import os
import shlex
import sys
from importlib import resources
from pathlib import Path

from medzoo.errors import InvalidValue, MissingState

LAUNCHERS = ("torchrun", "accelerate")


def config_names() -> list[str]:
    return sorted(
        p.name[: -len(".yaml")]
        for p in resources.files("medzoo").joinpath("launch_configs").iterdir()
        if p.name.endswith(".yaml")
    )


def config_path(name: str) -> Path:
    """A shipped accelerate config by name, or a path to the user's own."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        if not Path(name).exists():
            raise MissingState(f"--config {name}: no such file")
        return Path(name)
    path = Path(str(resources.files("medzoo").joinpath("launch_configs", f"{name}.yaml")))
    if not path.exists():
        raise InvalidValue(
            f"--config {name}: expected one of {', '.join(config_names())} or a path to an accelerate config file"
        )
    return path


def check_adapter_fits_config(method: str, config: str | None) -> None:
    """QLoRA cannot be sharded by ZeRO-3 as medzoo loads it: each rank places its nf4 weights on its
    own GPU (device_map), which ZeRO-3's partitioning refuses, and partitioning 4-bit storage needs
    a quant storage dtype set for it. Said before any process starts, not as a failure on every rank."""
    if method == "qlora" and config and "zero3" in Path(config).stem:
        raise InvalidValue(
            f"--config {config}: QLoRA is not sharded with ZeRO-3 here; use --config ddp or zero2 "
            "(the 4-bit base fits each GPU), or set adapter.method=lora"
        )


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True inside a process started by torchrun / accelerate (do not launch again)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_command(
    train_args: list[str], nproc: int, launcher: str | None = None, config: str | None = None, launcher_args: str = ""
) -> list[str]:
    """The command line that runs `medzoo train <train_args>` in `nproc` processes per node.

    `launcher_args` go to the launcher untouched (multi-node: `--nnodes 2 --node-rank 0
    --master-addr HOST --master-port 29500` for torchrun; `--num_machines 2 --machine_rank 0
    --main_process_ip HOST` for accelerate)."""
    launcher = launcher or ("accelerate" if config else "torchrun")
    if launcher not in LAUNCHERS:
        raise InvalidValue(f"--launcher {launcher}: expected one of {', '.join(LAUNCHERS)}")
    extra = shlex.split(launcher_args)
    target = ["-m", "medzoo.cli", "train", *train_args]
    if launcher == "torchrun":
        if config:
            raise InvalidValue("--config: accelerate configs need --launcher accelerate")
        return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *extra, *target]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(nproc)]
    if config:
        cmd += ["--config_file", str(config_path(config))]
    elif nproc > 1:
        cmd += ["--multi_gpu"] if _has_cuda() else []
    return [*cmd, *extra, *target]


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main_process_first():
    """Context manager: rank 0 runs the block first (building caches), the other ranks after it
    (reading them). A no-op in a single process."""
    import contextlib

    if world_size() == 1:
        return contextlib.nullcontext()
    return distributed_state().main_process_first()


def distributed_state():
    """accelerate's process state, created as the Trainer will create it (on CPU: MULTI_CPU over
    gloo; a bare PartialState() there says "not distributed" and its barriers do nothing)."""
    import torch
    from accelerate import PartialState

    on_cpu = not torch.cuda.is_available()
    return PartialState(cpu=on_cpu, backend="gloo" if on_cpu else None)


def gather(value) -> list:
    """Every rank's `value`, on every rank (a one-element list in a single process)."""
    if world_size() == 1:
        return [value]
    import torch.distributed as dist

    out = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


LAUNCHER_OPTIONS = ("--nproc", "--launcher", "--config", "--launcher-args")  # each takes a value


def train_args_from_argv(argv: list[str]) -> list[str] | None:
    """The user's own `medzoo train ...` arguments, minus the launcher's, to pass on unchanged to
    every process (so no option is lost or re-spelled on the way); None if argv is not `train`."""
    if "train" not in argv[1:]:
        return None
    rest = argv[argv.index("train", 1) + 1 :]
    out, skip = [], False
    for arg in rest:
        if skip:
            skip = False
        elif arg in LAUNCHER_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in LAUNCHER_OPTIONS)):
            out.append(arg)
    return out
