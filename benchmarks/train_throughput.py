"""Training throughput: medzoo's loop against the seed guides' way, same model, data and steps.

Baseline (what the guides do): trl's SFTTrainer with default logging, a collator that decodes the
images, renders the chat template and runs the processor on every batch, loss on every text token,
and torch's default thread count. medzoo: examples preprocessed once into the on-disk cache, a
collator that only pads, logits computed at answer positions only, one thread for a tiny model.

Each side runs in its own process (thread settings are per process), one after the other, in one
invocation. Prints samples/s for both (training loop only, and end to end with preprocessing) and
the ratio.

    .venv/bin/python benchmarks/train_throughput.py [--recipe phantom-tiny] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# Both sides train on the same 2000 examples (phantom-tiny's recipe has 10k): the data size does not
# change the cost of a step, only how long medzoo's one-off preprocessing takes.
DATA = ["data.n_train=2000"]


def _context(recipe_name: str, overrides: list[str]):
    from medzoo.recipe import load_recipe
    from medzoo.train import TrainContext

    return TrainContext.for_recipe(load_recipe(recipe_name, overrides))


def run_medzoo(recipe_name: str, steps: int, batch: int, out: str) -> dict:
    import torch

    from medzoo.adapters import attach_adapter, load_base_for_training
    from medzoo.preprocess import Collator
    from medzoo.train import choose_threads, prepare_split, stages_of, trainer_class, training_args

    t_start = time.perf_counter()
    ctx = _context(
        recipe_name,
        [
            *DATA,
            f"train.max_steps={steps}",
            f"train.batch_size={batch}",
            "train.report_to=[none]",
            "train.eval_steps=100000",
            "train.save_steps=100000",
        ],
    )
    recipe = ctx.recipe
    train_ds, _ = prepare_split(ctx, recipe.data, "train", None)
    base = load_base_for_training(ctx.model_path, ctx.family, recipe.adapter, "fp32")
    torch.set_num_threads(choose_threads(recipe, sum(p.numel() for p in base.parameters())))
    model = attach_adapter(base, ctx.family, recipe.adapter, False)
    args = training_args(recipe, stages_of(recipe)[0], Path(out), Path(out) / "logs", False)
    trainer = trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        data_collator=Collator.for_processor(ctx.processor),
    )
    t0 = time.perf_counter()
    trainer.train()
    loop = time.perf_counter() - t0
    return {
        "loop_seconds": loop,
        "total_seconds": time.perf_counter() - t_start,
        "samples": steps * batch,
        "threads": torch.get_num_threads(),
    }


def run_baseline(recipe_name: str, steps: int, batch: int, out: str) -> dict:
    import torch
    from trl import SFTConfig, SFTTrainer

    from medzoo.adapters import attach_adapter, load_base_for_training
    from medzoo.data.sources import load_splits
    from medzoo.inference import example_images
    from medzoo.prompts import build_messages, render

    t_start = time.perf_counter()
    ctx = _context(recipe_name, DATA)
    recipe = ctx.recipe
    raw = load_splits(recipe.data)["train"]
    processor = ctx.processor
    image_ids = set(processor.tokenizer.convert_tokens_to_ids(list(ctx.family.image_tokens)))

    def collate(rows):
        # As in the guides: decode, render and process every batch; mask padding and image tokens.
        texts, images = [], []
        for row in rows:
            messages, _ = build_messages(row, with_answer=True)
            texts.append(render(processor, messages, add_generation_prompt=False))
            images.append(example_images(row, ctx.family, ctx.image_settings).images)
        batch_enc = processor(text=texts, images=images, return_tensors="pt", padding=True)
        labels = batch_enc["input_ids"].clone()
        labels[batch_enc["attention_mask"] == 0] = -100
        for i in image_ids:
            labels[labels == i] = -100
        batch_enc["labels"] = labels
        return batch_enc

    base = load_base_for_training(ctx.model_path, ctx.family, recipe.adapter, "fp32")
    model = attach_adapter(base, ctx.family, recipe.adapter, False)
    config = SFTConfig(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=recipe.train.lr,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        report_to="none",
        save_strategy="no",
        use_cpu=True,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=raw, data_collator=collate, processing_class=processor)
    t0 = time.perf_counter()
    trainer.train()
    loop = time.perf_counter() - t0
    return {
        "loop_seconds": loop,
        "total_seconds": time.perf_counter() - t_start,
        "samples": steps * batch,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="phantom-tiny")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--side", choices=["medzoo", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--out", default="/tmp/medzoo-train-bench")
    args = ap.parse_args()
    if args.side:
        fn = run_medzoo if args.side == "medzoo" else run_baseline
        print("RESULT " + json.dumps(fn(args.recipe, args.steps, args.batch, f"{args.out}/{args.side}")))
        return
    results = {}
    for side in ("baseline", "medzoo"):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--side",
                side,
                "--recipe",
                args.recipe,
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--out",
                args.out,
            ],
            capture_output=True,
            text=True,
        )
        line = next((s for s in proc.stdout.splitlines() if s.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
        results[side] = json.loads(line[7:])
    print(f"recipe {args.recipe}, {args.steps} steps x batch {args.batch}")
    for side, r in results.items():
        print(
            f"{side:9s} threads={r['threads']}  loop {r['samples'] / r['loop_seconds']:7.1f} samples/s   end-to-end {r['samples'] / r['total_seconds']:7.1f} samples/s"
        )
    b, m = results["baseline"], results["medzoo"]
    print(
        f"ratio medzoo/baseline: loop {(b['loop_seconds'] / m['loop_seconds']):.1f}x, end-to-end {(b['total_seconds'] / m['total_seconds']):.1f}x"
    )


if __name__ == "__main__":
    main()
