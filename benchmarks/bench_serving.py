"""Serving throughput: `medzoo serve` (vLLM's server, base + the adapter as a LoRA module) against
`vllm serve` of a merged copy, same requests, one run.

Both servers are vLLM's own OpenAI-compatible server, started the same way (the command
`medzoo serve` builds; for the merged copy the same command on the merged folder without the
LoRA flags). Each gets a warm-up, then the same N requests for the tuned model (the test split's
first examples in the training prompt format, images as PNG data URIs) from C concurrent
clients. Prints requests/s of wall time, the ratio LoRA / merged, and whether the answers agree.

    python benchmarks/bench_serving.py [--requests 240] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE = "phantom-tiny"
LORA_FLAGS = {"--enable-lora": 0, "--max-lora-rank": 1, "--max-loras": 1, "--lora-modules": 1}  # flag -> values


def medzoo(*args: str) -> None:
    exe = Path(sys.executable).parent / "medzoo"
    proc = subprocess.run([str(exe), *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"medzoo {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")


def without_lora(argv: list[str], model: str) -> list[str]:
    """The same `vllm serve` command on another model folder, without the LoRA flags."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg in LORA_FLAGS:
            skip = LORA_FLAGS[arg]
        else:
            out.append(arg)
    out[out.index("serve") + 1] = model  # vllm serve MODEL
    return out


def measure(server, requests, labels: dict, concurrency: int, log: Path) -> dict:
    """Start the server, warm it up, time the requests; the server is stopped afterwards."""
    from medzoo.engines.openai_engine import OpenAIEngine
    from medzoo.serve import running

    t0 = time.perf_counter()
    with running(server, log, timeout=900):
        start_s = time.perf_counter() - t0
        engine = OpenAIEngine(server.base_url, labels, concurrency=concurrency)
        engine.generate(requests[:concurrency], 16)  # warm-up
        t = time.perf_counter()
        answers = engine.generate(requests, 16)
        wall = time.perf_counter() - t
    return {"start_s": start_s, "wall_s": wall, "requests_per_s": len(requests) / wall, "answers": answers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=240)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--run-dir", default=str(REPO / "benchmarks" / ".runs" / "bench-serving"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run = Path(args.run_dir)
    sets = ["--set", f"run_dir={run}", "--set", f"data.n_test={args.requests}"]
    if not (run / "adapter" / "adapter_config.json").exists():
        print("training a short adapter for the benchmark (200 steps) ...", flush=True)
        medzoo("train", RECIPE, "--overwrite", *sets, "--set", "train.max_steps=200", "--set", "train.eval_steps=1000")
    if not (run / "merged" / "config.json").exists():
        medzoo("merge", RECIPE, *sets[:2])

    from medzoo.data.sources import first_rows
    from medzoo.engines.base import requests_from
    from medzoo.inference import prepare
    from medzoo.models.loading import recipe_base
    from medzoo.recipe import load_recipe, prompt_settings
    from medzoo.serve import Server, free_port, vllm_server

    recipe = load_recipe(RECIPE, [s for s in sets if s != "--set"])
    base = recipe_base(recipe)
    _, rows = first_rows(recipe.data, "test", args.requests)
    prepared = prepare(rows, base.processor, base.family, prompt_settings(recipe), "none", base.image_settings)
    lora = vllm_server(recipe, port=free_port(), base=base)
    tuned, plain = requests_from(prepared, adapter="tuned"), requests_from(prepared)
    merged_argv = without_lora(lora.argv, str(run / "merged"))
    port = free_port()
    merged_argv[merged_argv.index("--port") + 1] = str(port)
    merged = Server(merged_argv, lora.env, f"http://127.0.0.1:{port}/v1")

    print(f"{len(rows)} requests, {args.concurrency} concurrent clients, vLLM's server (CPU), tiny Qwen2.5-VL\n")
    a = measure(lora, tuned, {"base": "base", "tuned": "tuned"}, args.concurrency, run / "serve-lora.log")
    b = measure(merged, plain, {"base": "base"}, args.concurrency, run / "serve-merged.log")
    same = sum(x.strip() == y.strip() for x, y in zip(a["answers"], b["answers"]))
    print("| server | start (s) | requests/s | vs merged |")
    print("|---|---|---|---|")
    print(f"| medzoo serve: base + LoRA `tuned` | {a['start_s']:.1f} | {a['requests_per_s']:.1f} | "
          f"{a['requests_per_s'] / b['requests_per_s']:.2f}x |")  # fmt: skip
    print(f"| vllm serve of the merged copy | {b['start_s']:.1f} | {b['requests_per_s']:.1f} | 1.00x |")
    print(f"\nanswers equal: {same}/{len(rows)}")
    for r in (a, b):
        r.pop("answers")
    out = run / "bench_serving.json"
    out.write_text(json.dumps({"lora": a, "merged": b, "answers_equal": same, "requests": len(rows)}, indent=2))
    print(f"raw figures: {out}")


if __name__ == "__main__":
    main()
