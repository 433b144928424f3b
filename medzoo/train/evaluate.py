"""Held-out exact match after training, through the bench's prompts and the transformers engine."""

from __future__ import annotations

from medzoo.train.data import TrainContext


def quick_eval(model, ctx: TrainContext, rows, max_new_tokens: int) -> dict:
    """Held-out exact match by greedy generation (the bench's prompts and engine code), overall
    and per question category.

    Under torchrun / accelerate every rank calls this with the same `rows` and generates every
    world_size-th row; the hits are gathered and every rank returns the same result. Under ZeRO-3
    (and FSDP) each forward all-gathers the sharded weights, a collective every rank must join:
    the shards are padded (repeating their last row, whose answer is dropped) to one length so
    every rank runs the same number of generate() calls, and generate() keeps the ranks in step
    token by token (synced_gpus, on by default under ZeRO-3)."""
    from medzoo import launch
    from medzoo.engines import hf_engine
    from medzoo.inference import prepare
    from medzoo.metrics import exact_match
    from medzoo.models.loading import stop_token_ids

    rank, world = launch.rank(), launch.world_size()
    mine = list(range(rank, len(rows), world))
    padded = mine + [mine[-1] if mine else 0] * (-(-len(rows) // world) - len(mine))
    prepared = prepare(
        [rows[i] for i in padded],
        ctx.processor,
        ctx.family,
        ctx.prompt_settings,
        ctx.recipe.prompts.train_mode,
        ctx.image_settings,
    )
    model.eval()
    preds = hf_engine.generate(
        model,
        ctx.processor,
        prepared.prompts,
        prepared.images,
        max_new_tokens,
        stop_token_ids(ctx.processor, ctx.family),
        batch_size=16,
    )
    model.train()
    # zip stops at len(mine): the padding's answers are dropped
    mine_hits = [(i, bool(exact_match(pred, rows[i]["answer"]))) for i, pred in zip(mine, preds)]
    hits: dict[str, list[bool]] = {}
    for i, hit in sorted(h for part in launch.gather(mine_hits) for h in part):
        row = rows[i]
        hits.setdefault(row.get("category") or row.get("task") or "all", []).append(hit)
    everything = [h for v in hits.values() for h in v]
    return {
        "overall": sum(everything) / max(len(everything), 1),
        "by_category": {k: round(sum(v) / len(v), 3) for k, v in sorted(hits.items())},
    }
