"""End to end (slow): Tiny zoo models: real tokenizers, deterministic bytes, load and generate in transformers and vLLM."""

import json

import pytest
from conftest import ZOO_NAMES, run_medzoo

pytestmark = pytest.mark.slow


# A known, open discrepancy, kept visible rather than tuned away: on the 4 x 128 tiny Gemma, vLLM's
# CPU engine picks " ab" at the 3rd new token where transformers picks " Ad" with a 2.99-logit
# lead, which is no near-tie. A 1024-token sliding window (the prompt is ~60 tokens) changes
# nothing, so suspect how vLLM's CPU path masks Gemma 3's bidirectional image attention
# (unverified). strict: the test fails once the engines agree, so the mark cannot outlive the bug.
GEMMA_VLLM_DIVERGES = pytest.mark.xfail(
    strict=True, reason="vLLM CPU and transformers differ on tiny-gemma3 at a 2.99-logit margin (open)"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=GEMMA_VLLM_DIVERGES) if n == "tiny-gemma3" else n for n in ZOO_NAMES]
)
def test_vllm_and_transformers_agree(name):
    """`medzoo generate` with both engines: vLLM (fp32) gives the same greedy text as transformers.

    Known difference: random weights produce near-tied logits, and kernels that differ in the last
    bits then pick different tokens; the first 4 tokens agree for every Qwen zoo model. tiny-gemma3:
    see GEMMA_VLLM_DIVERGES."""
    proc = run_medzoo(
        "generate",
        "phantom-tiny",
        "--set",
        f"base=zoo:{name}",
        "--set",
        "bench.max_new_tokens=4",
        "--engine",
        "hf,vllm",
        "--json",
        "--prompt",
        "static",
    )
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert result["answers"]["vllm"] == result["answers"]["hf"]
    assert result["answers"]["hf"].strip()
