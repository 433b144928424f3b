"""`train(recipe)`: claim the run folder, run each stage (reusing finished ones), write the manifest."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from medzoo import __version__
from medzoo.errors import AlreadyExists
from medzoo.train.data import Stage, TrainContext, choose_threads, data_fingerprint, prepare_split, raw_rows, stages_of
from medzoo.train.evaluate import quick_eval
from medzoo.train.recipe_guard import check_resume, record_started
from medzoo.train.trainer import (
    checkpoint_marker_callback,
    gathered_adapter,
    latest_checkpoint,
    progress_callback,
    save_adapter,
    trainable_weights_digest,
    trainer_class,
    training_args,
)


def train(
    recipe,
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    eval_limit: int = 100,
    log=print,
    callbacks: list | None = None,
    progress: bool = True,
    accept_recipe_changes: bool = False,
) -> dict:
    """Train the recipe's adapter; returns the manifest (also written to <run_dir>/manifest.json).

    `callbacks` are extra transformers TrainerCallbacks (medzoo tune's pruning hook);
    `accept_recipe_changes` lets `resume` continue with changed training settings (recipe_guard)."""
    import contextlib

    from medzoo import launch
    from medzoo.data.sources import loaded_once
    from medzoo.locks import exclusive

    # One training per run folder (rank 0 holds it; the other ranks of the same run do not write).
    held = exclusive(recipe.run_path(), "training outputs") if launch.is_main() else contextlib.nullcontext()
    with held, loaded_once():  # the dataset is read (and DICOM/NIfTI converted) once per run, not per use
        return _train(recipe, resume, overwrite, dry_run, eval_limit, log, callbacks, progress, accept_recipe_changes)


def _train(recipe, resume, overwrite, dry_run, eval_limit, log, callbacks, progress, accept_recipe_changes) -> dict:
    import torch
    from transformers import set_seed

    from medzoo import launch
    from medzoo.adapters import load_base_for_training

    run_dir = recipe.run_path()
    main = launch.is_main()  # under torchrun / accelerate only rank 0 writes files and logs
    if not main:
        log, progress = (lambda *a: None), False
    _claim_run_dir(run_dir, main, resume, overwrite, dry_run)
    if main and not dry_run:
        if resume:
            check_resume(run_dir, recipe, accept_recipe_changes)
        record_started(run_dir, recipe)

    plan = None
    if dry_run:
        from medzoo.errors import MissingState
        from medzoo.train.plan import training_plan

        plan = training_plan(recipe, log)  # from the config alone: before any download or cache build
        try:
            ctx = TrainContext.for_recipe(recipe)
        except MissingState as e:
            log(f"dry run: the base is not on this machine ({e}); the sizes above come from its config")
            return {"dry_run": True, "plan": plan, "measured": None}
    else:
        ctx = TrainContext.for_recipe(recipe)
    set_seed(recipe.train.seed)
    base = load_base_for_training(ctx.model_path, ctx.family, recipe.adapter, recipe.train.precision)
    threads = choose_threads(recipe, sum(p.numel() for p in base.parameters()))
    torch.set_num_threads(threads)

    run = _StageRun(recipe, ctx, base, run_dir, resume, dry_run, threads, callbacks, progress, main, log)
    with launch.main_process_first():
        val_ds, hit = prepare_split(ctx, recipe.data, "validation", recipe.data.limit_val)  # shared by every stage
    run.cache_builds["validation"] = [r for r, h in enumerate(launch.gather(hit)) if not h]
    for stage in stages_of(recipe):
        dry = run.stage(stage, val_ds)
        if dry is not None:
            return {**dry, "plan": plan}
    # Every rank finishes the run: under ZeRO-3 the held-out generation and the adapter gather are
    # collectives (rank 0 alone would wait for the others forever); only rank 0 writes.
    return _finish_run(run, val_ds, eval_limit)


def holds_training(run_dir: Path) -> bool:
    """Whether a run folder holds what training writes: a manifest, an adapter, a finished stage or a
    checkpoint. Bench results of the base model, or an empty checkpoint folder a --dry-run left, do not
    make a run (and must not make the first `medzoo train` refuse)."""
    return (
        (run_dir / "manifest.json").exists()
        or (run_dir / "adapter").exists()
        or any(run_dir.glob("stages/*/stage.json"))
        or any(run_dir.glob("checkpoints/*/checkpoint-*"))
    )


def _claim_run_dir(run_dir: Path, main: bool, resume: bool, overwrite: bool, dry_run: bool) -> None:
    if main and holds_training(run_dir) and not (resume or overwrite or dry_run):
        raise AlreadyExists(
            f"{run_dir}: already holds a run; pass --resume to continue it or --overwrite to start over"
        )
    if main and overwrite and run_dir.exists() and not dry_run:
        shutil.rmtree(run_dir)


class _StageRun:
    """The state a run carries from stage to stage: the adapter so far, reports, cache builds."""

    def __init__(self, recipe, ctx, base, run_dir, resume, dry_run, threads, callbacks, progress, main, log):
        self.recipe, self.ctx, self.base, self.run_dir = recipe, ctx, base, run_dir
        self.resume, self.dry_run, self.threads, self.callbacks = resume, dry_run, threads, callbacks
        self.progress, self.main, self.log = progress, main, log
        self.started = time.time()
        self.reports: list[dict] = []
        self.model = None
        self.trainer = None  # the last stage's; see stage()
        self.prev_adapter = None
        self.cache_builds: dict = {}  # split -> ranks that built the preprocessed cache (rank 0 only, when distributed)

    def stage(self, stage: Stage, val_ds) -> dict | None:
        """Train one stage (or reuse it when finished); returns the report of a dry run, else None."""
        from medzoo import launch

        recipe, ctx, log = self.recipe, self.ctx, self.log
        stage_dir = self.run_dir / "stages" / stage.dirname
        with launch.main_process_first():
            train_ds, hit = prepare_split(
                ctx, stage.data, "train", stage.data.limit_train, stage.stage_filter, stage.categories
            )
        self.cache_builds[f"train:{stage.dirname}"] = [r for r, h in enumerate(launch.gather(hit)) if not h]
        log(
            f"stage {stage.dirname}: {len(train_ds)} train / {len(val_ds)} val examples "
            f"(preprocessed cache {'hit' if hit else 'built'})"
        )
        if self.resume and (stage_dir / "adapter_config.json").exists() and not self.dry_run:
            log(f"stage {stage.dirname}: already finished, continuing from its adapter")
            self.prev_adapter = stage_dir
            self.reports.append(json.loads((stage_dir / "stage.json").read_text()))
            return None
        trainer, checkpoint = self._trainer(stage, train_ds, val_ds)
        if self.dry_run:
            from medzoo.adapters import trainable_parameters

            trainable, total = trainable_parameters(self.model)
            return _dry_run_report(recipe, ctx, trainer, self.model, train_ds, trainable, total, self.threads, log)
        if checkpoint:
            log(f"stage {stage.dirname}: resuming from {checkpoint}")
        report = _train_stage(trainer, self.model, stage, train_ds, checkpoint)
        # Kept to the end of the run: its TrainingArguments own the DeepSpeed config that
        # is_deepspeed_zero3_enabled() reads through a weak reference (gathered_adapter, and
        # generate()'s synced_gpus in the held-out evaluation).
        self.trainer = trainer
        with gathered_adapter(self.model):  # every rank: a collective under ZeRO-3
            if self.main:
                from medzoo.atomic import write_json

                save_adapter(self.model, ctx.processor, stage_dir)
                write_json(stage_dir / "stage.json", report)
        self.reports.append(report)
        self.prev_adapter = stage_dir
        log(
            f"stage {stage.dirname}: {report['steps']} steps, train loss {report['train_loss']:.4f}, "
            f"eval loss {report['eval_loss']:.4f}"
        )
        return None

    def _trainer(self, stage: Stage, train_ds, val_ds):
        from transformers import set_seed

        from medzoo.adapters import attach_adapter
        from medzoo.preprocess import Collator

        recipe = self.recipe
        if self.model is None:
            set_seed(recipe.train.seed)
            self.model = attach_adapter(
                self.base,
                self.ctx.family,
                recipe.adapter,
                recipe.train.gradient_checkpointing,
                str(self.prev_adapter) if self.prev_adapter else None,
            )
        checkpoints = self.run_dir / "checkpoints" / stage.dirname
        checkpoint = latest_checkpoint(checkpoints, self.log if self.main else None) if self.resume else None
        args = training_args(
            recipe,
            stage,
            self.run_dir / "checkpoints" / stage.dirname,
            self.run_dir / "logs" / stage.dirname,
            True,
            eval_on_start=not checkpoint and not self.dry_run,
        )
        trainer = trainer_class()(
            model=self.model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=val_ds,
            data_collator=Collator.for_processor(self.ctx.processor),
            callbacks=[checkpoint_marker_callback()]
            + ([progress_callback()] if self.progress else [])
            + list(self.callbacks or []),
        )
        if not self.progress:
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)  # no per-log dict printing either
        return trainer, checkpoint


def _train_stage(trainer, model, stage: Stage, train_ds, checkpoint) -> dict:
    initial_sha = trainable_weights_digest(model)
    t0 = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    except BaseException:
        for callback in trainer.callback_handler.callbacks:
            getattr(callback, "close_bar", lambda: None)()
        raise
    eval_before = (
        None if checkpoint else next((r["eval_loss"] for r in trainer.state.log_history if "eval_loss" in r), None)
    )
    seconds = time.perf_counter() - t0
    eval_metrics = trainer.evaluate()
    with gathered_adapter(model):  # under ZeRO-3 the weights are shards until gathered (every rank)
        final_sha = trainable_weights_digest(model)
    return {
        "stage": stage.dirname,
        "train_examples": len(train_ds),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "eval_loss": eval_metrics.get("eval_loss"),
        "eval_loss_before": eval_before,
        "initial_adapter_sha": initial_sha,
        "final_adapter_sha": final_sha,
        "seconds": round(seconds, 2),
        "train_samples_per_second": result.metrics.get("train_samples_per_second"),
        "resumed_from": checkpoint,
    }


def _finish_run(run: _StageRun, val_ds, eval_limit: int) -> dict:
    """Held-out accuracy (every rank generates a share), the final adapter, manifest.json and
    recipe.yaml (rank 0 writes)."""
    from medzoo import launch
    from medzoo.adapters import adapter_digest, trainable_parameters
    from medzoo.atomic import write_json

    recipe, ctx, log, run_dir = run.recipe, run.ctx, run.log, run.run_dir
    model = run.model
    if model is None:  # every stage already finished (a --resume after completion)
        from peft import PeftModel

        model = PeftModel.from_pretrained(run.base, str(run.prev_adapter))
    trainable, total = trainable_parameters(model)
    val_rows = raw_rows(ctx, recipe.data, "validation", eval_limit)
    accuracy = quick_eval(model, ctx, val_rows, recipe.bench.max_new_tokens) if val_rows else None
    with gathered_adapter(model):  # every rank: a collective under ZeRO-3
        if run.main:
            save_adapter(model, ctx.processor, run_dir / "adapter")
    if not run.main:
        return {"rank": launch.rank(), "world_size": launch.world_size(), "stages": run.reports}
    manifest = {
        "medzoo_version": __version__,
        "recipe": recipe.name,
        "config_hash": recipe.config_hash(),
        "base": recipe.base,
        "base_path": ctx.model_path,
        "family": ctx.family.name,
        "adapter_method": recipe.adapter.method,
        "train_prompt_mode": recipe.prompts.train_mode,
        # What later stages read instead of the recipe as it is then (medzoo.run.open_run).
        "trained_recipe": recipe.to_dict(),
        "image_settings": ctx.image_settings,
        "adapter_digest": adapter_digest(run_dir / "adapter"),
        "data_fingerprint": val_ds._fingerprint,
        "dataset": data_fingerprint(recipe.data),
        "dropped_rows": ctx.drops,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "quantized_4bit_layers": sum(
            1
            for m in model.modules()
            if type(m).__module__.startswith("bitsandbytes") and type(m).__name__ == "Linear4bit"
        ),
        "torch_threads": run.threads,
        "world_size": launch.world_size(),
        "preprocess_cache_built_by_ranks": run.cache_builds,
        "stages": run.reports,
        "metrics": {
            "train_loss": run.reports[-1]["train_loss"],
            "eval_loss": run.reports[-1]["eval_loss"],
            "val_exact_match": accuracy["overall"] if accuracy else None,
            "val_exact_match_by_category": accuracy["by_category"] if accuracy else None,
            "val_examples_generated": len(val_rows),
        },
        "wall_seconds": round(time.time() - run.started, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    record_started(run_dir, recipe)  # the recipe as finished (with --accept-recipe-changes: the new values)
    write_json(run_dir / "manifest.json", manifest)
    dropped = sum(ctx.drops.values())
    log(f"dropped rows: {dropped} {ctx.drops if dropped else ''}".rstrip())
    if accuracy is not None:
        per = ", ".join(f"{k} {v:.0%}" for k, v in accuracy["by_category"].items())
        log(f"held-out exact match ({len(val_rows)} validation examples): {accuracy['overall']:.1%} ({per})")
    log(f"adapter written to {run_dir / 'adapter'}")
    return manifest


def _dry_run_report(recipe, ctx, trainer, model, train_ds, trainable, total, threads, log) -> dict:
    """Load everything and run the first batch forward+backward; report sizes, steps and memory."""
    import psutil
    import torch

    from medzoo.models.placement import to_model
    from medzoo.train.trainer import answer_only_loss

    batch = next(iter(trainer.get_train_dataloader()))
    on_cuda = torch.cuda.is_available()
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
        batch = to_model(batch, model)
    rss0 = psutil.Process().memory_info().rss
    # The loss training computes (logits at answer positions only), not the model's own full-vocabulary one.
    loss = answer_only_loss(model, dict(batch))
    loss.backward()
    model.zero_grad(set_to_none=True)
    rss1 = psutil.Process().memory_info().rss
    t = recipe.train
    per_step = t.batch_size * t.grad_accum
    steps_per_epoch = max(1, -(-len(train_ds) // per_step))
    steps = t.max_steps or int(steps_per_epoch * t.epochs)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # Trainable parameters in fp32 need a gradient + two Adam moments.
    optimizer_bytes = trainable * 4 * 3
    activation_bytes = max(rss1 - rss0, 0)
    labels = batch["labels"]
    report = {
        "dry_run": True,
        "base": ctx.model_path,
        "family": ctx.family.name,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_percent": 100.0 * trainable / total,
        "examples_per_epoch": len(train_ds),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": steps,
        "first_batch_shape": list(batch["input_ids"].shape),
        "first_batch_loss_tokens": int((labels != -100).sum()),
        "first_batch_loss": float(loss),
        "torch_threads": threads,
        "memory_estimate_mb": {
            "weights": round(weight_bytes / 2**20, 1),
            "grads_and_optimizer": round(optimizer_bytes / 2**20, 1),
            "activations_first_batch": round(activation_bytes / 2**20, 1),
            "total": round((weight_bytes + optimizer_bytes + activation_bytes) / 2**20, 1),
        },
        "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
    }
    log(f"trainable parameters: {trainable:,} of {total:,} ({report['trainable_percent']:.2f}%)")
    log(f"examples per epoch: {len(train_ds)}; steps per epoch: {steps_per_epoch}; total steps: {steps}")
    log(
        f"first batch: {report['first_batch_shape']} tokens, {report['first_batch_loss_tokens']} carry loss, loss {report['first_batch_loss']:.4f}"
    )
    m = report["memory_estimate_mb"]
    log(
        f"memory estimate: {m['total']} MB (weights {m['weights']}, grads+optimizer {m['grads_and_optimizer']}, activations {m['activations_first_batch']})"
    )
    return report
