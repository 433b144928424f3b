"""Held-out exact match after training, through the bench's prompts and the transformers engine."""

from __future__ import annotations

from medzoo.train.data import TrainContext


def quick_eval(model, ctx: TrainContext, rows, max_new_tokens: int) -> dict:
    """Held-out exact match by greedy generation (the bench's prompts and engine code), overall
    and per question category."""
    from medzoo.engines import hf_engine
    from medzoo.inference import prepare
    from medzoo.metrics import exact_match
    from medzoo.models.loading import stop_token_ids

    prepared = prepare(
        rows, ctx.processor, ctx.family, ctx.prompt_settings, ctx.recipe.prompts.train_mode, ctx.image_settings
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
    hits: dict[str, list[bool]] = {}
    for pred, row in zip(preds, rows):
        hits.setdefault(row.get("category") or row.get("task") or "all", []).append(
            bool(exact_match(pred, row["answer"]))
        )
    everything = [h for v in hits.values() for h in v]
    return {
        "overall": sum(everything) / max(len(everything), 1),
        "by_category": {k: round(sum(v) / len(v), 3) for k, v in sorted(hits.items())},
    }
