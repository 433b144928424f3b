"""The virtualenv can import the whole stack and load every family's processor (the torchvision fix)."""

import subprocess
import sys

import pytest


def _python(code: str):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_stack_imports():
    proc = _python("import torchvision, transformers, trl, peft, bitsandbytes, datasets, evaluate, vllm; print('ok')")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


def test_torch_is_the_cpu_build_here():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA host")
    assert torch.__version__.startswith("2.13.0")


@pytest.mark.parametrize("name", ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-gemma3"])
def test_family_processor_loads(name):
    """AutoProcessor (with Qwen's torchvision-backed video processor) loads for every family."""
    from transformers import AutoProcessor

    from medzoo import zoo

    proc = AutoProcessor.from_pretrained(zoo.build(name))
    assert proc.image_processor is not None
    if "qwen" in name:
        assert proc.video_processor is not None
