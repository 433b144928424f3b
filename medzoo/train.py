"""`medzoo.train(recipe)`: train a recipe's LoRA/QLoRA adapter, stage by stage.

Output folder (the recipe's run directory, default runs/<name>):

    adapter/            final peft adapter + processor + chat template (what bench/merge read)
    stages/NN-<name>/   each curriculum stage's adapter (a single-stage recipe has one)
    checkpoints/<stage>/checkpoint-N   Trainer checkpoints, for --resume
    logs/               TensorBoard
    recipe.yaml         the resolved recipe
    manifest.json       base model, data fingerprint, config hash, version, drops, metrics

Speed choices (measured in benchmarks/train_throughput.py): examples are tokenised and their
images processed once and cached on disk, the collator only pads and concatenates, a plain
`Trainer` is used (trl's SFTTrainer computes extra per-step metrics), and tiny models train on
one torch thread (~40x faster per step than two on 2-core machines, measured).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from medzoo import __version__
from medzoo.errors import AlreadyExists, InvalidValue


@dataclass
class Stage:
    index: int
    name: str
    data: object  # DataSpec with the stage's overrides applied
    stage_filter: str | None
    categories: list[str] | None
    epochs: float
    max_steps: int | None
    lr: float

    @property
    def dirname(self) -> str:
        return f"{self.index:02d}-{self.name}"


@dataclass
class TrainContext:
    """Everything loaded once per run and shared by the stages."""

    recipe: object
    model_path: str
    family: object
    image_settings: dict
    processor: object
    prompt_settings: object
    drops: dict = field(default_factory=dict)

    @classmethod
    def for_recipe(cls, recipe) -> TrainContext:
        """Resolve the recipe's base model, family, image settings, processor and prompt settings."""
        from medzoo.models.loading import recipe_base
        from medzoo.recipe import prompt_settings

        base = recipe_base(recipe)
        return cls(recipe, base.path, base.family, base.image_settings, base.processor, prompt_settings(recipe))


def stages_of(recipe) -> list[Stage]:
    t = recipe.train
    if not t.stages:
        return [Stage(0, "main", recipe.data, None, None, t.epochs, t.max_steps, t.lr)]
    out = []
    for i, s in enumerate(t.stages):
        data = recipe.data
        if s.tasks:
            data = replace(data, tasks=list(s.tasks))
        if s.limit_train:
            data = replace(data, limit_train=s.limit_train)
        out.append(
            Stage(
                i,
                s.name,
                data,
                s.stage_filter,
                s.categories,
                s.epochs if s.epochs is not None else t.epochs,
                s.max_steps if s.max_steps is not None else (t.max_steps if s.epochs is None else None),
                s.lr if s.lr is not None else t.lr,
            )
        )
    return out


def choose_threads(recipe, n_params: int | None = None) -> int:
    if recipe.train.threads:
        return recipe.train.threads
    # Tiny models: one thread beats two by a wide margin on small matrices (measured).
    if n_params is not None and n_params < 200_000_000:
        return 1
    return os.cpu_count() or 1


# ---------------------------------------------------------------- data


def prepare_split(
    ctx: TrainContext,
    data_spec,
    split: str,
    limit: int | None,
    stage_filter: str | None = None,
    categories: list[str] | None = None,
):
    """Cleaned, limited, encoded split (cached on disk). Returns (dataset, cache_hit)."""
    from medzoo.cache import cached_dataset
    from medzoo.data.sources import load_splits
    from medzoo.preprocess import DropCounter, Encoder, clean_rows, encode_dataset, limit_rows

    dd = load_splits(data_spec)
    if split not in dd:
        if split == "validation" and "train" in dd:
            # No validation split given: hold out a deterministic slice of train.
            parts = dd["train"].train_test_split(
                test_size=min(0.1, 200 / max(len(dd["train"]), 1)), seed=data_spec.seed
            )
            dd = {"train": parts["train"], "validation": parts["test"]}
        else:
            raise InvalidValue(f"data: the dataset has no {split!r} split (has: {', '.join(dd)})")
    raw = dd[split]
    proc = ctx.processor
    key = {
        "dataset": raw._fingerprint,
        "split": split,
        "model_type": ctx.family.name,
        "image_settings": ctx.image_settings,
        "image_processor": proc.image_processor.to_dict(),
        "chat_template": proc.chat_template,
        "tokenizer_size": len(proc.tokenizer),
        "prompt_mode": ctx.recipe.prompts.train_mode,
        "prompts": ctx.prompt_settings.__dict__,
        "limit": limit,
        "per_task": data_spec.per_task_limit,
        "stage_filter": stage_filter,
        "categories": sorted(categories) if categories else None,
        "drop_answers": data_spec.drop_answers,
        "seed": data_spec.seed,
    }
    counter = DropCounter()

    def build():
        ds = raw
        if stage_filter is not None:
            if "stage" not in ds.column_names:
                raise InvalidValue(f"train.stages: stage_filter {stage_filter!r} needs a 'stage' column in the dataset")
            ds = ds.filter(lambda s: str(s) == str(stage_filter), input_columns="stage")
        if categories:
            if "category" not in ds.column_names:
                raise InvalidValue(f"train.stages: categories {categories} need a 'category' column in the dataset")
            wanted, present = set(categories), sorted(set(ds["category"]))
            if not wanted & set(present):
                raise InvalidValue(
                    f"train.stages: categories {categories} match no {split} rows (the dataset has: {', '.join(present)})"
                )
            ds = ds.filter(lambda c: c in wanted, input_columns="category")
        ds = clean_rows(ds, data_spec.drop_answers, counter)
        ds = limit_rows(ds, limit, data_spec.per_task_limit, data_spec.seed)
        enc = Encoder(proc, ctx.family, ctx.prompt_settings, ctx.recipe.prompts.train_mode, ctx.image_settings)
        out = encode_dataset(ds, enc, desc=f"preprocess {split}")
        # Drops are part of the cached result, so a cache hit still reports them.
        return out.add_column("_drops", [json.dumps(counter.as_dict())] * len(out)) if len(out) else out

    ds, hit, _ = cached_dataset("preprocessed", key, build)
    if len(ds) == 0:
        raise InvalidValue(f"data: no usable examples left in split {split!r} after cleaning and limits")
    drops = json.loads(ds[0]["_drops"])
    for k, v in drops.items():
        ctx.drops[f"{split}.{k}"] = ctx.drops.get(f"{split}.{k}", 0) + v
    tensor_cols = [c for c in ds.column_names if c not in ("id", "task", "_drops")]
    ds.set_format("numpy", columns=tensor_cols)
    return ds, hit


# ---------------------------------------------------------------- progress


def _progress_callback():
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class LossBar(TrainerCallback):
        """One progress bar with the latest loss and throughput (examples/s)."""

        def on_train_begin(self, args, state, control, **kw):
            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc="train", unit="step", dynamic_ncols=True
            )
            self.t0, self.step0 = time.perf_counter(), state.global_step
            self.per_step = (
                args.per_device_train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
            )

        def on_step_end(self, args, state, control, **kw):
            self.bar.update(state.global_step - self.bar.n)
            dt = time.perf_counter() - self.t0
            if dt > 0:
                self.bar.set_postfix_str(
                    f"{(state.global_step - self.step0) * self.per_step / dt:.1f} ex/s" + self._loss(state),
                    refresh=False,
                )

        @staticmethod
        def _loss(state):
            for rec in reversed(state.log_history):
                if "loss" in rec:
                    return f" loss {rec['loss']:.4f}"
            return ""

        def on_train_end(self, args, state, control, **kw):
            self.bar.close()

    return LossBar()


# ---------------------------------------------------------------- loss on answer positions only


def answer_only_loss(model, inputs: dict, return_outputs: bool = False, num_items=None):
    """Causal-LM loss computed from logits at the answer positions only.

    A VLM's logits over every prompt and image position are (batch x length x vocab): 243 MB per
    forward for 8 x 50 tokens of Qwen's 152k vocabulary, and as much again for their gradient, all
    for positions whose labels are -100. `logits_to_keep` (the model's own code path, soft-capping
    included) asks for the positions that predict a label; the loss is the same number.
    """
    import torch.nn.functional as F

    labels = inputs.pop("labels")
    # Position t predicts token t+1: keep positions whose *next* label counts.
    targets = labels[:, 1:]
    keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)
    outputs = model(**inputs, logits_to_keep=keep)
    logits = outputs.logits.float()  # (batch, len(keep), vocab)
    picked = targets[:, keep]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), picked.reshape(-1), ignore_index=-100, reduction="sum")
    # Divided by the answer tokens of the whole optimiser step (all micro-batches, all ranks) when the
    # Trainer counts them, so gradient accumulation and DDP give the big-batch gradient exactly.
    n = num_items if num_items is not None else (picked != -100).sum()
    loss = loss / (n.clamp(min=1) if hasattr(n, "clamp") else max(n, 1))
    inputs["labels"] = labels
    return (loss, outputs) if return_outputs else loss


def _trainer_class():
    from transformers import Trainer

    class AnswerLossTrainer(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # Ask the Trainer to count the answer tokens of each optimiser step (summed over
            # accumulation steps and gathered over ranks) and pass them to compute_loss.
            self.model_accepts_loss_kwargs = True

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = answer_only_loss(model, dict(inputs), return_outputs=True, num_items=num_items_in_batch)
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks; undo it
            return (loss, outputs) if return_outputs else loss

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            import torch

            with torch.no_grad():
                loss = answer_only_loss(model, dict(self._prepare_inputs(inputs)))
            return loss.detach(), None, None

    return AnswerLossTrainer


# ---------------------------------------------------------------- training


def _training_args(recipe, stage: Stage, out_dir: Path, logging_dir: Path, has_eval: bool, eval_on_start: bool = False):
    import torch
    from transformers import TrainingArguments

    from medzoo.launch import world_size

    t = recipe.train
    steps_kw = {"max_steps": stage.max_steps} if stage.max_steps else {"num_train_epochs": stage.epochs}
    report = [r for r in t.report_to if r != "none"] or "none"
    # transformers 5 takes the TensorBoard folder from the environment, read when the Trainer starts.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(logging_dir)
    return TrainingArguments(
        output_dir=str(out_dir),
        learning_rate=stage.lr,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optimizer,
        bf16=t.precision == "bf16",
        fp16=t.precision == "fp16",
        seed=t.seed,
        data_seed=t.seed,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=t.eval_steps,
        # The loss before training is measured inside train(): a Trainer.evaluate() call before
        # train() marks the model as prepared, and DDP then never wraps it (ranks drift apart).
        eval_on_start=eval_on_start,
        logging_steps=t.logging_steps,
        report_to=report,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,  # our own bar shows loss and throughput
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if world_size() > 1 and not torch.cuda.is_available() else None,
        average_tokens_across_devices=True,  # the loss is divided by the answer tokens of all ranks
        **steps_kw,
    )


def _latest_checkpoint(folder: Path) -> str | None:
    if not folder.exists():
        return None
    cps = sorted((p for p in folder.glob("checkpoint-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[-1]))
    return str(cps[-1]) if cps else None


def _save_adapter(model, processor, dest: Path) -> None:
    """Adapter + processor (tokenizer, chat template) written atomically."""
    from medzoo.atomic import replace_dir

    with replace_dir(dest) as tmp:
        model.save_pretrained(str(tmp))
        processor.save_pretrained(str(tmp))


def adapter_digest(model) -> str:
    """A hash of the adapter's trainable weights (shows which adapter a stage started from)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


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


def train(
    recipe,
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    eval_limit: int = 100,
    log=print,
    callbacks: list | None = None,
    progress: bool = True,
) -> dict:
    """Train the recipe's adapter; returns the manifest (also written to <run_dir>/manifest.json).

    `callbacks` are extra transformers TrainerCallbacks (medzoo tune's pruning hook)."""
    from medzoo.data.sources import loaded_once

    with loaded_once():  # the dataset is read (and DICOM/NIfTI converted) once per run, not per use
        return _train(recipe, resume, overwrite, dry_run, eval_limit, log, callbacks, progress)


def _train(recipe, resume, overwrite, dry_run, eval_limit, log, callbacks, progress) -> dict:
    import torch
    from transformers import set_seed

    from medzoo import launch
    from medzoo.adapters import load_base_for_training

    run_dir = recipe.run_path()
    main = launch.is_main()  # under torchrun / accelerate only rank 0 writes files and logs
    if not main:
        log, progress = (lambda *a: None), False
    _claim_run_dir(run_dir, main, resume, overwrite, dry_run)

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
            return dry
    if not main:
        return {"rank": launch.rank(), "world_size": launch.world_size(), "stages": run.reports}
    return _finish_run(run, val_ds, eval_limit)


def _claim_run_dir(run_dir: Path, main: bool, resume: bool, overwrite: bool, dry_run: bool) -> None:
    if main and run_dir.exists() and any(run_dir.iterdir()) and not (resume or overwrite or dry_run):
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
        if self.main:
            from medzoo.atomic import write_json

            _save_adapter(self.model, ctx.processor, stage_dir)
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
        checkpoint = _latest_checkpoint(self.run_dir / "checkpoints" / stage.dirname) if self.resume else None
        args = _training_args(
            recipe,
            stage,
            self.run_dir / "checkpoints" / stage.dirname,
            self.run_dir / "logs" / stage.dirname,
            True,
            eval_on_start=not checkpoint and not self.dry_run,
        )
        trainer = _trainer_class()(
            model=self.model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=val_ds,
            data_collator=Collator(self.ctx.processor.tokenizer.pad_token_id),
            callbacks=([_progress_callback()] if self.progress else []) + list(self.callbacks or []),
        )
        if not self.progress:
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)  # no per-log dict printing either
        return trainer, checkpoint


def _train_stage(trainer, model, stage: Stage, train_ds, checkpoint) -> dict:
    initial_sha = adapter_digest(model)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    eval_before = (
        None if checkpoint else next((r["eval_loss"] for r in trainer.state.log_history if "eval_loss" in r), None)
    )
    seconds = time.perf_counter() - t0
    eval_metrics = trainer.evaluate()
    return {
        "stage": stage.dirname,
        "train_examples": len(train_ds),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "eval_loss": eval_metrics.get("eval_loss"),
        "eval_loss_before": eval_before,
        "initial_adapter_sha": initial_sha,
        "final_adapter_sha": adapter_digest(model),
        "seconds": round(seconds, 2),
        "train_samples_per_second": result.metrics.get("train_samples_per_second"),
        "resumed_from": checkpoint,
    }


def _finish_run(run: _StageRun, val_ds, eval_limit: int) -> dict:
    """Held-out accuracy, the final adapter, manifest.json and recipe.yaml (rank 0)."""
    import yaml

    from medzoo import launch
    from medzoo.adapters import trainable_parameters
    from medzoo.atomic import write_json, write_text

    recipe, ctx, log, run_dir = run.recipe, run.ctx, run.log, run.run_dir
    model = run.model
    if model is None:  # every stage already finished (a --resume after completion)
        from peft import PeftModel

        model = PeftModel.from_pretrained(run.base, str(run.prev_adapter))
    trainable, total = trainable_parameters(model)
    val_rows = _raw_rows(ctx, recipe.data, "validation", eval_limit)
    accuracy = quick_eval(model, ctx, val_rows, recipe.bench.max_new_tokens) if val_rows else None
    _save_adapter(model, ctx.processor, run_dir / "adapter")
    manifest = {
        "medzoo_version": __version__,
        "recipe": recipe.name,
        "config_hash": recipe.config_hash(),
        "base": recipe.base,
        "base_path": ctx.model_path,
        "family": ctx.family.name,
        "adapter_method": recipe.adapter.method,
        "train_prompt_mode": recipe.prompts.train_mode,
        "data_fingerprint": val_ds._fingerprint,
        "dataset": _data_fingerprint(recipe.data),
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
    write_json(run_dir / "manifest.json", manifest)
    write_text(run_dir / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    dropped = sum(ctx.drops.values())
    log(f"dropped rows: {dropped} {ctx.drops if dropped else ''}".rstrip())
    if accuracy is not None:
        per = ", ".join(f"{k} {v:.0%}" for k, v in accuracy["by_category"].items())
        log(f"held-out exact match ({len(val_rows)} validation examples): {accuracy['overall']:.1%} ({per})")
    log(f"adapter written to {run_dir / 'adapter'}")
    return manifest


def _data_fingerprint(spec) -> str:
    from medzoo.data.sources import load_splits

    dd = load_splits(spec)
    return "-".join(dd[s]._fingerprint for s in sorted(dd))


def _raw_rows(ctx: TrainContext, spec, split: str, limit: int):
    from medzoo.data.sources import load_splits
    from medzoo.preprocess import DropCounter, clean_rows

    dd = load_splits(spec)
    if split not in dd:
        return []
    ds = clean_rows(dd[split], spec.drop_answers, DropCounter())
    return [ds[i] for i in range(min(limit, len(ds)))]


def _dry_run_report(recipe, ctx, trainer, model, train_ds, trainable, total, threads, log) -> dict:
    """Load everything and run the first batch forward+backward; report sizes, steps and memory."""
    import psutil
    import torch

    batch = next(iter(trainer.get_train_dataloader()))
    rss0 = psutil.Process().memory_info().rss
    out = model(**batch)
    out.loss.backward()
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
        "first_batch_loss": float(out.loss),
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
