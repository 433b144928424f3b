"""`medzoo train`: adapters that learn, resume after a kill, QLoRA on CPU, curricula, the data cache."""

import pytest
from conftest import run_medzoo


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    proc = run_medzoo("train", "phantom-tiny", "--set", f"run_dir={run}", check=False)
    assert proc.returncode == 1
    assert "already holds a run; pass --resume" in proc.stderr


def test_only_training_output_makes_a_run(tmp_path):
    """Base-model bench results (`medzoo bench` before any training) or the empty checkpoint folder a
    --dry-run leaves must not make the first `medzoo train` refuse; a stage, checkpoint or adapter does."""
    from medzoo.train.runner import holds_training

    run = tmp_path / "run"
    (run / "bench" / "test-vllm").mkdir(parents=True)
    (run / "bench" / "test-vllm" / "summary.json").write_text("{}")
    (run / "checkpoints" / "00-main").mkdir(parents=True)
    assert not holds_training(run)
    (run / "checkpoints" / "00-main" / "checkpoint-10").mkdir()
    assert holds_training(run)
    other = tmp_path / "other"
    (other / "stages" / "00-main").mkdir(parents=True)
    assert not holds_training(other)
    (other / "stages" / "00-main" / "stage.json").write_text("{}")
    assert holds_training(other)


def test_a_stage_can_train_on_some_question_categories_only():
    """`categories` narrows a stage to e.g. the location questions (the Gemma curriculum's first stage)."""
    from medzoo.data.sources import load_splits
    from medzoo.recipe import load_recipe
    from medzoo.train import TrainContext, prepare_split

    recipe = load_recipe("phantom-tiny-gemma", ["data.n_train=60", "data.n_val=6"])
    ctx = TrainContext.for_recipe(recipe)
    raw = load_splits(recipe.data)["train"]
    wanted = {row["id"] for row in raw if row["category"] in ("location", "size")}
    ds, _ = prepare_split(ctx, recipe.data, "train", None, categories=["location", "size"])
    assert 0 < len(ds) < len(raw)
    assert set(ds.with_format(None)["id"]) == wanted
    everything, _ = prepare_split(ctx, recipe.data, "train", None)  # a different cache entry
    assert len(everything) == len(raw)
    with pytest.raises(
        ValueError, match=r"categories \['locaton'\] match no train rows \(the dataset has: colour, counting"
    ):
        prepare_split(ctx, recipe.data, "train", None, categories=["locaton"])


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_gradient_checkpointing_gives_the_same_adapter_gradients(method, tmp_path, monkeypatch):
    """The real recipes train with gradient checkpointing (recomputing activations in the backward
    pass to save memory): the adapter's gradients must be those of a plain backward pass, for LoRA
    and for QLoRA (whose base is frozen by medzoo, not peft's prepare_model_for_kbit_training)."""
    import torch

    from medzoo.adapters import attach_adapter, load_base_for_training
    from medzoo.preprocess import Collator
    from medzoo.recipe import load_recipe
    from medzoo.train.data import TrainContext, prepare_split
    from medzoo.train.trainer import answer_only_loss

    monkeypatch.setenv("MEDZOO_HOME", str(tmp_path))
    recipe = load_recipe(
        "phantom-tiny", ["data.n_train=8", "data.n_val=4", "data.n_test=4", f"adapter.method={method}"]
    )
    ctx = TrainContext.for_recipe(recipe)
    ds, _ = prepare_split(ctx, recipe.data, "validation", 4)
    batch = Collator.for_processor(ctx.processor)([ds[i] for i in range(len(ds))])

    def grads(checkpointing: bool) -> dict:
        torch.manual_seed(0)
        base = load_base_for_training(ctx.model_path, ctx.family, recipe.adapter, "fp32")
        model = attach_adapter(base, ctx.family, recipe.adapter, checkpointing)
        model.train()
        assert model.base_model.model.is_gradient_checkpointing == checkpointing
        assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
        answer_only_loss(model, dict(batch)).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and plain
    assert any(g.abs().sum() > 0 for g in plain.values())  # lora_B starts at zero: lora_A's gradient is 0
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6, rtol=1e-4), name


def test_a_resumed_optimiser_follows_the_recipe_lr_from_that_step():
    """--resume --accept-recipe-changes with another lr: the checkpoint's optimiser and scheduler
    state carry the old lr; after apply_lr the run continues exactly as one started with the new lr
    would at that step (the schedule's factor kept)."""
    import torch
    from transformers import get_scheduler

    from medzoo.train.trainer import apply_lr

    def run(lr, steps, state=None):
        w = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.AdamW([w], lr=lr)
        sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=10)
        if state:
            opt.load_state_dict(state[0])
            sched.load_state_dict(state[1])
            apply_lr(opt, sched, lr)
        lrs = []
        for _ in range(steps):
            w.sum().backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            lrs.append(opt.param_groups[0]["lr"])
        return lrs, (opt.state_dict(), sched.state_dict())

    old, state = run(1e-3, 4)
    resumed, _ = run(5e-4, 4, state)
    fresh, _ = run(5e-4, 8)
    assert resumed == pytest.approx(fresh[4:]), "the new lr from the resumed step on"
    unapplied = run(1e-3, 4, state)[0]
    assert unapplied == pytest.approx(run(1e-3, 8)[0][4:]) and unapplied != pytest.approx(resumed)
