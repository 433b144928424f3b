"""GGUF export: size per quantisation relative to f16, and llama.cpp answers/s per quantisation
against the merged transformers model, on the same examples, in one run.

    python benchmarks/export_size_speed.py [RECIPE] [--examples 50] [--set k=v ...]

Uses the recipe's export folder (`make export RECIPE=...` writes it); exports first when it is
missing. Every engine answers the same bench examples greedily, one request at a time after one
warm-up answer (what a llama.cpp / Ollama user sees per request); the merged HF model is also
timed batched (medzoo bench's HF engine) for reference. Load times are reported separately.
Prints a table and writes benchmarks/results/export_size_speed-<recipe>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", nargs="?", default="phantom-tiny")
    ap.add_argument("--examples", type=int, default=50)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    from medzoo.data.sources import first_rows
    from medzoo.engines import hf_engine
    from medzoo.engines.llama_cpp import gguf_answer, image_token_budget, load_gguf, quiet_native_stderr
    from medzoo.export import QUANTS, export_gguf
    from medzoo.inference import prepare
    from medzoo.models.loading import load_model, recipe_base, stop_token_ids
    from medzoo.recipe import load_recipe, prompt_settings

    recipe = load_recipe(args.recipe, args.overrides)
    out = recipe.run_path() / "export"
    name = recipe.name
    if not all((out / f"{name}-{q}.gguf").exists() for q in QUANTS):
        print(f"no complete export in {out}: exporting first (medzoo export {name} --gguf)")
        export_gguf(recipe, quants=list(QUANTS), n_parity=10)
    mmproj = out / f"mmproj-{name}-f16.gguf"

    base = recipe_base(recipe)
    split, rows = first_rows(recipe.data, recipe.bench.split, args.examples)
    prepared = prepare(
        rows, base.processor, base.family, prompt_settings(recipe), recipe.prompts.train_mode, base.image_settings
    )
    n, max_new = len(rows), recipe.bench.max_new_tokens
    stops = stop_token_ids(base.processor, base.family)

    def hf_answers(model, batch_size: int) -> list[str]:
        return [
            a.strip()
            for a in hf_engine.generate(
                model, base.processor, prepared.prompts, prepared.images, max_new, stops, batch_size=batch_size
            )
        ]

    t = time.perf_counter()
    model = load_model(str(recipe.run_path() / "merged"))
    hf_load = time.perf_counter() - t
    hf_engine.generate(
        model, base.processor, prepared.prompts[:1], prepared.images[:1], max_new, stops, batch_size=1
    )  # warm-up
    t = time.perf_counter()
    reference = hf_answers(model, 1)
    hf_one = time.perf_counter() - t
    t = time.perf_counter()
    hf_answers(model, 16)
    hf_batched = time.perf_counter() - t
    del model
    merged_mb = sum(p.stat().st_size for p in (recipe.run_path() / "merged").glob("*.safetensors")) / 1e6

    rows_out = [
        {
            "engine": "transformers (merged, fp32), one at a time",
            "size_mb": merged_mb,
            "load_s": hf_load,
            "answers_per_s": n / hf_one,
            "agreement": 1.0,
        },
        {
            "engine": "transformers (merged, fp32), batch 16",
            "size_mb": merged_mb,
            "load_s": hf_load,
            "answers_per_s": n / hf_batched,
            "agreement": None,
        },
    ]
    budget = image_token_budget(base.processor)
    f16_mb = (out / f"{name}-f16.gguf").stat().st_size / 1e6
    for q in QUANTS:
        path = out / f"{name}-{q}.gguf"
        with quiet_native_stderr():
            t = time.perf_counter()
            llm = load_gguf(path, mmproj, budget)
            load_s = time.perf_counter() - t
            gguf_answer(llm, prepared.messages[0], prepared.images[0], max_new)  # warm-up
            t = time.perf_counter()
            answers = [gguf_answer(llm, m, i, max_new) for m, i in zip(prepared.messages, prepared.images)]
            secs = time.perf_counter() - t
            del llm
        size = path.stat().st_size / 1e6
        rows_out.append(
            {
                "engine": f"llama.cpp {q}",
                "size_mb": size,
                "size_vs_f16": size / f16_mb,
                "load_s": load_s,
                "answers_per_s": n / secs,
                "agreement": sum(a == r for a, r in zip(answers, reference)) / n,
            }
        )
    hf_rate = rows_out[0]["answers_per_s"]
    for r in rows_out:
        r["speed_vs_hf_one_at_a_time"] = r["answers_per_s"] / hf_rate

    parity_path = out / "parity.json"
    leave = json.loads(parity_path.read_text()).get("leave_output_tensor") if parity_path.exists() else None
    print(
        f"\n{name}: {n} {split} examples, greedy, max {max_new} new tokens; mmproj {mmproj.stat().st_size / 1e6:.2f} MB (f16, shared); "
        f"output tensor {'kept f16' if leave else 'quantised'}"
    )
    print("| engine | size MB | size vs f16 | load s | answers/s | vs HF one-at-a-time | answers equal to HF |")
    print("|---|---|---|---|---|---|---|")
    for r in rows_out:
        rel = f"{r['size_vs_f16']:.2f}" if "size_vs_f16" in r else "-"
        agree = f"{r['agreement']:.2f}" if r["agreement"] is not None else "-"
        print(
            f"| {r['engine']} | {r['size_mb']:.2f} | {rel} | {r['load_s']:.2f} | {r['answers_per_s']:.1f} | {r['speed_vs_hf_one_at_a_time']:.2f}x | {agree} |"
        )
    results = REPO / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    dest = results / f"export_size_speed-{name}.json"
    dest.write_text(
        json.dumps(
            {"recipe": name, "examples": n, "split": split, "leave_output_tensor": leave, "rows": rows_out}, indent=2
        )
        + "\n"
    )
    print(f"wrote {dest}")


if __name__ == "__main__":
    sys.exit(main())
