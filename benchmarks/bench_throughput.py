"""Evaluation throughput: `medzoo bench` against the seed guides' way, side by side, one run.

Same tiny model (tiny Qwen2.5-VL + a LoRA adapter), same >= 300 test examples, same 6
configurations (base/tuned x none/static/adaptive prompts), same greedy decoding:

  (a) medzoo bench, vLLM: one engine, tuned model as LoRA requests, engine start-up included
  (b) the seed's way (MedGemma guide): per configuration the model is loaded again (+ peft adapter),
      then one example at a time: apply_chat_template -> processor -> model.generate -> decode
  (c) medzoo bench --engine hf: transformers batched generate (left padding), model loaded per model
  (d) medzoo bench, vLLM with --lora-mode merged: adapter merged and served by a second engine

Each runs in its own subprocess (imports counted), one after the other. Prints examples/s
(generations per second of wall time) for each and the ratios to (b), and where the time goes.

    python benchmarks/bench_throughput.py [--examples 300] [--skip-seed-way]
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

REPO = Path(__file__).resolve().parent.parent
RECIPE = "phantom-tiny"
MODES = ("none", "static", "adaptive")


def medzoo(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "medzoo"
    proc = subprocess.run([str(exe), *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"medzoo {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc


def seed_way(run_dir: str, n: int, data_sets: list[str]) -> None:
    """(b), run in a child process: reload per configuration, one example at a time."""
    t0 = time.perf_counter()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from medzoo.data.sources import load_splits
    from medzoo.models.loading import family_of, image_settings, load_processor, stop_token_ids
    from medzoo.prompts import build_messages
    from medzoo.recipe import load_recipe, prompt_settings
    from medzoo.zoo import resolve_base

    t_import = time.perf_counter() - t0
    recipe = load_recipe(RECIPE, [f"run_dir={run_dir}", *data_sets])
    base = resolve_base(recipe.base)
    family = family_of(base)
    settings = image_settings(family, recipe.image, base)
    ds = load_splits(recipe.data)["test"]
    rows = [ds[i] for i in range(n)]
    ps = prompt_settings(recipe)
    load_s = gen_s = prep_s = 0.0
    answers = {}
    for model_name in ("base", "tuned"):
        for mode in MODES:
            t = time.perf_counter()
            processor = load_processor(base, settings)
            model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
            if model_name == "tuned":
                model = PeftModel.from_pretrained(model, str(Path(run_dir) / "adapter"))
            model.eval()
            stops = stop_token_ids(processor, family)
            load_s += time.perf_counter() - t
            for row in rows:
                t = time.perf_counter()
                image = row["image"].convert("RGB")
                w, h = image.size
                messages, _ = build_messages(row, mode, ps, perceived_size=family.perceived_size(w, h, settings))
                prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                inputs = processor(text=prompt, images=[image], return_tensors="pt", padding=True)
                prep_s += time.perf_counter() - t
                t = time.perf_counter()
                with torch.inference_mode():
                    out = model.generate(
                        **inputs, max_new_tokens=recipe.bench.max_new_tokens, do_sample=False, eos_token_id=stops
                    )
                answers[f"{model_name}/{mode}/{row['id']}"] = processor.batch_decode(
                    out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
                )[0]
                gen_s += time.perf_counter() - t
            del model
    print(
        json.dumps(
            {"import_s": t_import, "load_s": load_s, "prepare_s": prep_s, "generate_s": gen_s, "answers": answers}
        )
    )


def vision_share(run_dir: str, n: int, data_sets: list[str]) -> dict:
    """How long the vision tower + projector takes for n images (transformers, batched)."""
    import torch

    from medzoo.data.sources import load_splits
    from medzoo.models.loading import family_of, image_settings, load_model, load_processor
    from medzoo.recipe import load_recipe
    from medzoo.zoo import resolve_base

    recipe = load_recipe(RECIPE, [f"run_dir={run_dir}", *data_sets])
    base = resolve_base(recipe.base)
    settings = image_settings(family_of(base), recipe.image, base)
    processor = load_processor(base, settings)
    model = load_model(base)
    ds = load_splits(recipe.data)["test"]
    images = [ds[i]["image"].convert("RGB") for i in range(n)]
    t = time.perf_counter()
    pix = processor.image_processor(images=images, return_tensors="pt")
    t_proc = time.perf_counter() - t
    t = time.perf_counter()
    with torch.inference_mode():
        model.model.get_image_features(pix["pixel_values"], pix["image_grid_thw"])
    return {"image_processor_s": t_proc, "vision_forward_s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=300)
    ap.add_argument("--run-dir", default=str(REPO / "benchmarks" / ".runs" / "bench-throughput"))
    ap.add_argument("--skip-seed-way", action="store_true", help="Leave out (b) (it is the slow one).")
    ap.add_argument("--_seed-way", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    data_sets = [f"data.n_test={args.examples}"]
    if args._seed_way:
        seed_way(args.run_dir, args.examples, data_sets)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run = Path(args.run_dir)
    sets = [a for s in [f"run_dir={run}", *data_sets] for a in ("--set", s)]
    if not (run / "adapter" / "adapter_config.json").exists():
        print("training a short adapter for the benchmark (200 steps) ...", flush=True)
        medzoo("train", RECIPE, "--overwrite", *sets, "--set", "train.max_steps=200", "--set", "train.eval_steps=1000")
    n_gen = 6 * args.examples
    results: dict[str, dict] = {}

    def bench(label: str, *extra: str) -> None:
        out = run / "bench" / label
        t = time.perf_counter()
        medzoo("bench", RECIPE, *sets, "--limit", str(args.examples), "--out", str(out), "--overwrite", *extra)
        wall = time.perf_counter() - t
        summary = json.loads((out / "summary.json").read_text())
        results[label] = {"wall_s": wall, **summary["timing"]}
        print(f"  {label}: {wall:.1f} s", flush=True)

    # A rerun into the same folder would reuse finished records: start each from scratch.
    for label in ("vllm-lora", "hf-batched", "vllm-merged"):
        shutil.rmtree(run / "bench" / label, ignore_errors=True)
    shutil.rmtree(run / "merged", ignore_errors=True)
    print(f"{args.examples} examples x 6 configurations = {n_gen} generations per engine", flush=True)
    bench("vllm-lora", "--engine", "vllm", "--lora-mode", "lora")
    bench("hf-batched", "--engine", "hf")
    bench("vllm-merged", "--engine", "vllm", "--lora-mode", "merged")
    if not args.skip_seed_way:
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--_seed-way", "--examples", str(args.examples), "--run-dir", str(run)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        seed = json.loads(proc.stdout.strip().splitlines()[-1])
        results["seed-way"] = {"wall_s": time.perf_counter() - t, **{k: v for k, v in seed.items() if k != "answers"}}
        print(f"  seed-way: {results['seed-way']['wall_s']:.1f} s", flush=True)
        lora = {
            f"{r['config']}/{r['id']}": r["prediction"]
            for r in map(json.loads, (run / "bench" / "vllm-lora" / "records.jsonl").read_text().splitlines())
        }
        same = sum(lora.get(k) == v for k, v in seed["answers"].items())
        print(f"  seed-way answers identical to medzoo bench (vLLM): {same}/{len(seed['answers'])}")
    vision = vision_share(str(run), args.examples, data_sets)

    print("\n| engine | wall s | examples/s | vs seed's way | engine start s | generate s |")
    print("|---|---|---|---|---|---|")
    ref = results.get("seed-way", {}).get("wall_s")
    names = {
        "vllm-lora": "(a) medzoo bench, vLLM + LoRARequest",
        "seed-way": "(b) seed's way: reload per config, 1 example at a time",
        "hf-batched": "(c) medzoo bench --engine hf (batched)",
        "vllm-merged": "(d) medzoo bench, vLLM + merged adapter",
    }
    for label in ("vllm-lora", "seed-way", "hf-batched", "vllm-merged"):
        r = results.get(label)
        if not r:
            continue
        ratio = f"{ref / r['wall_s']:.1f}x" if ref else "-"
        start = r.get("engine_start_s", r.get("load_s", 0.0))
        print(
            f"| {names[label]} | {r['wall_s']:.1f} | {n_gen / r['wall_s']:.1f} | {ratio} | {start:.1f} | {r.get('generate_s', 0.0):.1f} |"
        )
    a = results["vllm-lora"]
    print(
        f"\nwhere (a)'s {a['wall_s']:.1f} s go: setup (imports of the library, data, processor, prompts) {a.get('setup_s', 0):.1f} s, "
        f"vLLM engine start {a.get('engine_start_s', 0):.1f} s, generate {a.get('generate_s', 0):.1f} s, scoring incl. BERTScore {a.get('scoring_s', 0):.1f} s, "
        f"the rest (python + torch + vllm imports) {a['wall_s'] - a.get('total_s', 0):.1f} s"
    )
    print(
        f"vision tower for {args.examples} images (transformers, one batch): image processor {vision['image_processor_s']:.2f} s, forward {vision['vision_forward_s']:.2f} s"
    )
    if "seed-way" in results:
        s = results["seed-way"]
        print(
            f"where (b)'s {s['wall_s']:.1f} s go: imports {s['import_s']:.1f} s, 6 model loads {s['load_s']:.1f} s, per-example processing {s['prepare_s']:.1f} s, generate {s['generate_s']:.1f} s"
        )
    json_out = run / "bench_throughput.json"
    json_out.write_text(json.dumps({"examples": args.examples, "results": results, "vision": vision}, indent=2))
    print(f"\nraw figures: {json_out}")


if __name__ == "__main__":
    main()
