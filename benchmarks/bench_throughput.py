"""Evaluation throughput: `medzoo bench` against the seed guides' way, side by side, one run.

Same tiny model (tiny Qwen2.5-VL + a LoRA adapter), same >= 300 test examples, same 6
configurations (base/tuned x none/static/adaptive prompts), same greedy decoding:

  (a) medzoo bench, vLLM: one engine, tuned model as LoRA requests, engine start-up included
  (b) the seed's way (MedGemma guide): per configuration the model is loaded again (+ peft adapter),
      then one example at a time: apply_chat_template -> processor -> model.generate -> decode
  (c) medzoo bench --engine hf: transformers batched generate (left padding), model loaded per model
  (d) medzoo bench, vLLM with --lora-mode merged: adapter merged and served by a second engine

Each runs in its own subprocess (imports counted), one after the other, at each size. Prints
generations per second of wall time for each and the ratios to (b), what `--engine auto` picks
at that size, where the time goes, the crossover between vLLM and transformers fitted from the
sizes, and a breakdown of vLLM's engine start (import, tokenizer/processor loads, multimodal
warm-up) with medzoo's vLLM patches on and off (MEDZOO_VLLM_PATCHES=0).

    python benchmarks/bench_throughput.py [--examples 300,1000] [--skip-seed-way]
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


def startup_profile(data_sets: list[str]) -> None:
    """Run in a child: one vLLM engine start (LoRA enabled) for the recipe, timed by part; prints JSON."""
    import functools

    t0 = time.perf_counter()
    import transformers
    from transformers import processing_utils

    from medzoo.models.loading import recipe_base
    from medzoo.recipe import load_recipe

    base = recipe_base(load_recipe(RECIPE, data_sets))
    parts = {"tokenizer_loads": 0, "tokenizer_s": 0.0, "processor_loads": 0, "processor_s": 0.0}

    def timed(owner, name, kind):
        original = getattr(owner, name).__func__

        @functools.wraps(original)
        def wrapper(cls, *a, **k):
            t = time.perf_counter()
            try:
                return original(cls, *a, **k)
            finally:  # a processor load contains its tokenizer load: count both, add only the outer
                parts[f"{kind}_loads"] += 1
                parts[f"{kind}_s"] += time.perf_counter() - t

        setattr(owner, name, classmethod(wrapper))

    timed(transformers.AutoTokenizer, "from_pretrained", "tokenizer")
    timed(processing_utils.ProcessorMixin, "from_pretrained", "processor")
    import copy

    deepcopy = copy.deepcopy
    parts.update(tokenizer_copies=0, tokenizer_copy_s=0.0)

    def counted_deepcopy(x, memo=None, _nil=[]):  # noqa: B006 (copy.deepcopy's own signature)
        if memo is not None or not isinstance(x, transformers.PreTrainedTokenizerBase):
            return deepcopy(x, memo)
        t = time.perf_counter()
        try:
            return deepcopy(x, memo)
        finally:  # vLLM's renderer pool: a deep copy of the tokenizer per worker
            parts["tokenizer_copies"] += 1
            parts["tokenizer_copy_s"] += time.perf_counter() - t

    copy.deepcopy = counted_deepcopy
    t = time.perf_counter()
    import vllm  # noqa: F401
    from vllm.renderers import base as renderers

    parts["vllm_import_s"] = time.perf_counter() - t
    original_warmup = renderers.BaseRenderer.warmup_mm

    def warmup_mm(self):
        t = time.perf_counter()
        original_warmup(self)
        parts["mm_warmup_s"] = parts.get("mm_warmup_s", 0.0) + time.perf_counter() - t

    renderers.BaseRenderer.warmup_mm = warmup_mm
    from medzoo.engines.vllm_engine import VLLMSettings, load_engine

    t = time.perf_counter()
    load_engine(base.path, VLLMSettings(enable_lora=True, max_lora_rank=16, max_loras=2), 1, base.image_settings)
    parts["engine_init_s"] = time.perf_counter() - t
    parts["process_s"] = time.perf_counter() - t0
    print(json.dumps(parts))


def child(*args: str, env: dict | None = None) -> dict:
    """This script in a child process (one of its hidden modes); its last stdout line as JSON."""
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})}
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


NAMES = {
    "vllm-lora": "(a) `medzoo bench --engine vllm`: one engine + LoRARequest",
    "seed-way": "(b) seed's way: reload per config, 1 example at a time",
    "hf-batched": "(c) `medzoo bench --engine hf` (batched)",
    "vllm-merged": "(d) `medzoo bench --engine vllm --lora-mode merged`",
}


def run_size(run: Path, n: int, skip_seed: bool, with_merged: bool) -> dict:
    """Every way at n test examples; returns label -> timing (wall_s plus bench's own timing)."""
    data_sets = [f"data.n_test={n}"]
    sets = [a for s in [f"run_dir={run}", *data_sets] for a in ("--set", s)]
    results: dict[str, dict] = {}

    def bench(label: str, *extra: str) -> None:
        out = run / "bench" / f"{label}-{n}"
        shutil.rmtree(out, ignore_errors=True)  # a rerun would reuse finished records
        t = time.perf_counter()
        medzoo("bench", RECIPE, *sets, "--limit", str(n), "--out", str(out), "--overwrite", *extra)
        wall = time.perf_counter() - t
        summary = json.loads((out / "summary.json").read_text())
        results[label] = {"wall_s": wall, **summary["timing"]}
        print(f"  {label}: {wall:.1f} s", flush=True)

    from medzoo.data.sources import load_splits
    from medzoo.recipe import load_recipe

    load_splits(load_recipe(RECIPE, [f"run_dir={run}", *data_sets]).data)  # generated once, before any timing
    print(f"\n{n} examples x 6 configurations = {6 * n} generations per way", flush=True)
    bench("vllm-lora", "--engine", "vllm", "--lora-mode", "lora")
    bench("hf-batched", "--engine", "hf")
    if with_merged:
        shutil.rmtree(run / "merged", ignore_errors=True)
        bench("vllm-merged", "--engine", "vllm", "--lora-mode", "merged")
    if not skip_seed:
        t = time.perf_counter()
        seed = child("--_seed-way", "--examples", str(n), "--run-dir", str(run))
        results["seed-way"] = {"wall_s": time.perf_counter() - t, **{k: v for k, v in seed.items() if k != "answers"}}
        print(f"  seed-way: {results['seed-way']['wall_s']:.1f} s", flush=True)
        lora = {
            f"{r['config']}/{r['id']}": r["prediction"]
            for r in map(json.loads, (run / "bench" / f"vllm-lora-{n}" / "records.jsonl").read_text().splitlines())
        }
        same = sum(lora.get(k) == v for k, v in seed["answers"].items())
        results["seed-way"]["same_answers"] = f"{same}/{len(seed['answers'])}"
    return results


def print_size(n: int, results: dict) -> None:
    from medzoo.bench.plan import choose_engine

    auto, _ = choose_engine("auto", 6 * n, "qwen2_5_vl", on_cuda=False)
    auto_label = "vllm-lora" if auto == "vllm" else "hf-batched"
    ref = results.get("seed-way", {}).get("wall_s")
    print(f"\n{n} examples x 6 = {6 * n} generations; `--engine auto` picks {auto} here")
    print("\n| way | wall s | generations/s | vs seed's way | start s | generate s | scoring s |")
    print("|---|---|---|---|---|---|---|")
    for label, name in NAMES.items():
        r = results.get(label)
        if not r:
            continue
        ratio = f"{ref / r['wall_s']:.1f}x" if ref else "-"
        start = r.get("engine_start_s", r.get("load_s", 0.0))
        auto_mark = " (= auto)" if label == auto_label else ""
        print(
            f"| {name}{auto_mark} | {r['wall_s']:.1f} | {6 * n / r['wall_s']:.1f} | {ratio} | {start:.1f} | "
            f"{r.get('generate_s', 0.0):.1f} | {r.get('scoring_s', 0.0):.1f} |"
        )
    a = results["vllm-lora"]
    print(
        f"\n(a)'s {a['wall_s']:.1f} s: setup (data, processor, prompts) {a.get('setup_s', 0):.1f} s, engine start "
        f"{a.get('engine_start_s', 0):.1f} s, generate {a.get('generate_s', 0):.1f} s, scoring {a.get('scoring_s', 0):.1f} s, "
        f"python + library imports {a['wall_s'] - a.get('total_s', 0):.1f} s"
    )
    if "seed-way" in results:
        s = results["seed-way"]
        print(
            f"(b)'s {s['wall_s']:.1f} s: imports {s['import_s']:.1f} s, 6 model loads {s['load_s']:.1f} s, "
            f"per-example processing {s['prepare_s']:.1f} s, generate {s['generate_s']:.1f} s; "
            f"answers identical to (a): {s['same_answers']}"
        )


def crossover(by_size: dict[int, dict]) -> float | None:
    """Generations where vLLM's and transformers' wall times meet (each fitted as fixed + per generation)."""
    sizes = sorted(by_size)
    if len(sizes) < 2:
        return None
    (n1, r1), (n2, r2) = (sizes[0], by_size[sizes[0]]), (sizes[-1], by_size[sizes[-1]])

    def line(label):
        per = (r2[label]["wall_s"] - r1[label]["wall_s"]) / (6 * (n2 - n1))
        return r1[label]["wall_s"] - per * 6 * n1, per

    (fv, pv), (fh, ph) = line("vllm-lora"), line("hf-batched")
    print(
        f"\nfitted wall time: vLLM {fv:.1f} s + {1000 * pv:.2f} ms/generation; "
        f"transformers {fh:.1f} s + {1000 * ph:.2f} ms/generation"
    )
    return (fv - fh) / (ph - pv) if ph > pv else None


def print_startup(profiles: dict) -> None:
    print("\nvLLM engine start, tiny Qwen2.5-VL with LoRA enabled (own process each):")
    print(
        "\n| vLLM | import s | engine init s | tokenizer loads (s) | processor loads (s) | tokenizer deep copies (s) "
        "| mm warm-up s |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, p in profiles.items():
        print(
            f"| {label} | {p['vllm_import_s']:.1f} | {p['engine_init_s']:.1f} | {p['tokenizer_loads']} "
            f"({p['tokenizer_s']:.1f}) | {p['processor_loads']} ({p['processor_s']:.1f}) | {p['tokenizer_copies']} "
            f"({p['tokenizer_copy_s']:.1f}) | {p.get('mm_warmup_s', 0):.1f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", default="300,1000", help="Comma-separated test-set sizes.")
    ap.add_argument("--run-dir", default=str(REPO / "benchmarks" / ".runs" / "bench-throughput"))
    ap.add_argument("--skip-seed-way", action="store_true", help="Leave out (b) (it is the slow one).")
    ap.add_argument("--_seed-way", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_startup", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(x) for x in args.examples.split(",")]
    if args._seed_way:
        seed_way(args.run_dir, sizes[0], [f"data.n_test={sizes[0]}"])
        return
    if args._startup:
        startup_profile([])
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run = Path(args.run_dir)
    if not (run / "adapter" / "adapter_config.json").exists():
        print("training a short adapter for the benchmark (200 steps) ...", flush=True)
        sets = ["--set", f"run_dir={run}", "--set", "train.max_steps=200", "--set", "train.eval_steps=1000"]
        medzoo("train", RECIPE, "--overwrite", *sets)
    profiles = {
        "as shipped (MEDZOO_VLLM_PATCHES=0)": child("--_startup", env={"MEDZOO_VLLM_PATCHES": "0"}),
        "with medzoo's patches": child("--_startup"),
    }
    print_startup(profiles)
    by_size = {n: run_size(run, n, args.skip_seed_way, with_merged=(i == 0)) for i, n in enumerate(sizes)}
    for n, results in by_size.items():
        print_size(n, results)
    from medzoo.bench.plan import CPU_VLLM_CROSSOVER_GENERATIONS

    fitted = crossover(by_size)
    if fitted is not None:
        print(
            f"crossover: {fitted:.0f} generations (medzoo.bench.plan.CPU_VLLM_CROSSOVER_GENERATIONS = "
            f"{CPU_VLLM_CROSSOVER_GENERATIONS})"
        )
    json_out = run / "bench_throughput.json"
    json_out.write_text(json.dumps({"startup": profiles, "sizes": by_size, "crossover": fitted}, indent=2))
    print(f"\nraw figures: {json_out}")


if __name__ == "__main__":
    main()
