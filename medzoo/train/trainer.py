"""The transformers Trainer medzoo uses: loss on answer tokens only, its arguments, progress, checkpoints."""

from __future__ import annotations

import os
import time
from pathlib import Path

from medzoo.errors import MedzooError
from medzoo.train.data import Stage


class TrainingDiverged(MedzooError, FloatingPointError):
    """The loss or the adapter weights became NaN or infinite (usually a learning rate far too high)."""


# ---------------------------------------------------------------- progress


def progress_callback():
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
            self.close_bar()

        def close_bar(self):
            """Also called when training fails, so the error starts on a line of its own."""
            if getattr(self, "bar", None) is not None:
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


def trainer_class():
    from transformers import Trainer

    class AnswerLossTrainer(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # Ask the Trainer to count the answer tokens of each optimiser step (summed over
            # accumulation steps and gathered over ranks) and pass them to compute_loss.
            self.model_accepts_loss_kwargs = True

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = answer_only_loss(model, dict(inputs), return_outputs=True, num_items=num_items_in_batch)
            if not bool(loss.isfinite()):  # one NaN step makes every later weight NaN: stop here
                raise TrainingDiverged(
                    f"train: the loss became {loss.item()} at step {self.state.global_step + 1} "
                    f"(learning rate {self.args.learning_rate:g}): training diverged and nothing was saved as an "
                    "adapter; lower train.lr and start over with --overwrite"
                )
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks; undo it
            return (loss, outputs) if return_outputs else loss

        def _load_optimizer_and_scheduler(self, checkpoint):
            super()._load_optimizer_and_scheduler(checkpoint)
            if checkpoint is not None:  # --resume: the recipe's lr, not the checkpoint's (see apply_lr)
                apply_lr(self.optimizer, self.lr_scheduler, self.args.learning_rate)

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            import torch

            with torch.no_grad():
                loss = answer_only_loss(model, dict(self._prepare_inputs(inputs)))
            return loss.detach(), None, None

    return AnswerLossTrainer


def apply_lr(optimizer, scheduler, lr: float) -> None:
    """Make a resumed optimiser and scheduler follow `lr` from this step on.

    A checkpoint's optimiser and scheduler state carry the learning rate the run started with
    (the param groups' lr / initial_lr, the scheduler's base_lrs), so a resume with
    `--accept-recipe-changes` and another train.lr would go on with the old one. The schedule's
    shape (warm-up, decay, steps) is rebuilt from the arguments and is already the new one; its
    current factor is kept and applied to the new base."""
    base_lrs = getattr(scheduler, "base_lrs", None)
    if base_lrs is None or optimizer is None:  # e.g. DeepSpeed's own scheduler: it restores its own
        return
    groups = getattr(optimizer, "param_groups", [])
    for group, base in zip(groups, base_lrs):
        factor = group["lr"] / base if base else 0.0
        group["initial_lr"] = lr
        group["lr"] = lr * factor
    scheduler.base_lrs = [lr] * len(base_lrs)
    scheduler._last_lr = [group["lr"] for group in groups]


# ---------------------------------------------------------------- training


def training_args(recipe, stage: Stage, out_dir: Path, logging_dir: Path, has_eval: bool, eval_on_start: bool = False):
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


# Written into a checkpoint folder after the Trainer has saved all of it: a checkpoint without it
# was cut short (a kill during the save) and would fail to load on --resume.
CHECKPOINT_COMPLETE = "medzoo-checkpoint-complete"


def checkpoint_marker_callback():
    from transformers import TrainerCallback

    class MarkCheckpointComplete(TrainerCallback):
        def on_save(self, args, state, control, model=None, **kw):  # after the whole checkpoint is written
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            # A checkpoint whose weights went NaN / inf is not one to resume from or to bench: it
            # stays unmarked, so --resume skips it (medzoo.train.trainer.latest_checkpoint).
            finite = model is None or all(
                bool(p.detach().isfinite().all()) for p in model.parameters() if p.requires_grad
            )
            if state.is_world_process_zero and folder.is_dir() and finite:
                (folder / CHECKPOINT_COMPLETE).write_text(f"{state.global_step}\n")

    return MarkCheckpointComplete()


def latest_checkpoint(folder: Path, log=None) -> str | None:
    """The newest complete checkpoint; newer ones a kill cut short are skipped (and said so)."""
    if not folder.exists():
        return None
    cps = sorted((p for p in folder.glob("checkpoint-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[-1]))
    complete = [p for p in cps if (p / CHECKPOINT_COMPLETE).exists()]
    skipped = [p.name for p in cps[cps.index(complete[-1]) + 1 if complete else 0 :]]
    if skipped and log:
        log(f"resume: skipping incomplete checkpoint(s) {', '.join(skipped)} in {folder} (cut short while saving)")
    return str(complete[-1]) if complete else None


def save_adapter(model, processor, dest: Path) -> None:
    """Adapter + processor (tokenizer, chat template) written atomically; never a non-finite adapter."""
    from medzoo.atomic import replace_dir

    bad = [n for n, p in model.named_parameters() if p.requires_grad and not bool(p.detach().isfinite().all())]
    if bad:
        raise TrainingDiverged(
            f"train: {len(bad)} adapter weights hold NaN or inf (e.g. {bad[0]}): training diverged; "
            f"{dest} was not written; lower train.lr and start over with --overwrite"
        )

    with replace_dir(dest) as tmp:
        model.save_pretrained(str(tmp))
        processor.save_pretrained(str(tmp))


def gathered_adapter(model):
    """Context manager: the adapter's (trainable) weights whole inside it, on every rank.

    Under DeepSpeed ZeRO-3 each rank keeps a shard of every parameter above
    stage3_param_persistence_threshold (1e5 elements by default) and `param.data` is an empty
    tensor: save_pretrained would write 0-element LoRA weights (peft 0.21 only warns) and the NaN
    check in save_adapter would see nothing. GatheredParameters is a collective, so every rank
    must enter; modifier_rank=None: read-only, nothing is scattered back. Only the adapter is
    gathered (megabytes), not the frozen base that accelerator.get_state_dict would consolidate.
    Without ZeRO-3 (single process, DDP, ZeRO-2) a no-op."""
    import contextlib

    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return contextlib.nullcontext()
    import deepspeed

    trainable = [p for p in model.parameters() if p.requires_grad]
    return deepspeed.zero.GatheredParameters(trainable, modifier_rank=None)


def trainable_weights_digest(model) -> str:
    """A hash of the adapter's trainable weights (shows which adapter a stage started from)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
