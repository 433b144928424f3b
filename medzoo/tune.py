"""`medzoo tune RECIPE`: Optuna search over recipe fields (the MedGemma guide's tuning, made resumable).

Each trial is an ordinary `medzoo.train` run of the recipe with the sampled values applied (same
data cache, same masking), in <run_dir>/tune/trial-NNN. The study lives in SQLite next to it, so a
crashed or interrupted tune picks up where it stopped: `--trials N` is the number of finished trials
the study aims for, not how many more to run. Trials report their validation loss at every
evaluation and the median pruner stops the ones that lag.

The guide lost runs to memory that piled up trial after trial; here each trial's model and trainer
live only inside `train()`, and after every trial the garbage collector, the CUDA cache and glibc's
free lists are emptied (tests/test_tune.py checks RSS across 10 trials).
"""

from __future__ import annotations

import gc
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from medzoo.data.sources import loaded_once
from medzoo.errors import InvalidValue

FINISHED = ("COMPLETE", "PRUNED")


@dataclass
class TuneResult:
    study_name: str
    storage: str
    best_value: float | None
    best_params: dict
    best_recipe: Path | None  # ready-to-train recipe with the best values
    trials: list[dict]  # number, state, value, params, seconds, rss_mb_after
    folder: Path


def default_storage(recipe) -> str:
    return f"sqlite:///{(recipe.run_path() / 'tune' / 'study.db').resolve()}"


def _storage(url: str):
    import optuna

    if url.startswith(("sqlite:", "postgresql:", "mysql:")):
        # A heartbeat lets a resumed study mark trials of a killed process as failed.
        return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90)
    return url


def suggest(trial, path: str, p) -> object:
    if p.type == "categorical":
        return trial.suggest_categorical(path, list(p.choices))
    if p.type == "int":
        return trial.suggest_int(path, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(path, float(p.low), float(p.high), step=p.step, log=p.log)


def trial_recipe(recipe, values: dict, folder: Path):
    """The recipe a trial trains: sampled values, its own run folder, the tune section's length and
    evaluation cadence, no checkpoints (a trial that dies is re-sampled, not resumed)."""
    from medzoo.recipe import apply_values

    t, spec = recipe.train, recipe.tune
    values = dict(values)
    if spec.max_steps:
        values["train.max_steps"] = spec.max_steps
    if spec.eval_steps:
        values["train.eval_steps"] = spec.eval_steps
    values["train.save_steps"] = 10**9
    values["train.report_to"] = ["none"]
    values.setdefault("train.logging_steps", t.logging_steps)
    return apply_values(recipe, values, run_dir=str(folder))


def release_memory() -> None:
    """Give back what a finished trial held: Python cycles, CUDA cache, glibc's free lists."""
    import ctypes

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    except ImportError:
        pass
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass  # not glibc


def _quiet_transformers() -> None:
    """One progress bar for the study, not a weight-loading bar per trial."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _pruning_callback(trial):
    import optuna
    from transformers import TrainerCallback

    class ReportEvalLoss(TrainerCallback):
        def __init__(self):
            self.reported: set[int] = set()

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            # train() evaluates once more after the last step; a step is reported once.
            if metrics and "eval_loss" in metrics and 0 < state.global_step and state.global_step not in self.reported:
                self.reported.add(state.global_step)
                trial.report(float(metrics["eval_loss"]), state.global_step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"eval loss {metrics['eval_loss']:.4f} at step {state.global_step}")

    return ReportEvalLoss()


def _objective(recipe, folder: Path, log):
    import optuna
    import psutil

    from medzoo.train import train
    from medzoo.train.trainer import TrainingDiverged

    spec = recipe.tune

    def objective(trial: optuna.Trial) -> float:
        values = {path: suggest(trial, path, p) for path, p in spec.space.items()}
        r = trial_recipe(recipe, values, folder / f"trial-{trial.number:03d}")
        callbacks = [_pruning_callback(trial)] if spec.objective == "eval_loss" else []
        t0 = time.perf_counter()
        pruned = diverged = None
        try:
            manifest = train(
                r,
                overwrite=True,
                eval_limit=spec.eval_limit if spec.objective == "val_exact_match" else 0,
                log=lambda *a: None,
                callbacks=callbacks,
                progress=False,
            )
        except optuna.TrialPruned as e:
            pruned = str(e)  # leaving the except block drops the traceback, and with it the trial's model
        except TrainingDiverged as e:
            diverged = e
        release_memory()
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
        trial.set_user_attr("rss_mb_after", round(psutil.Process().memory_info().rss / 2**20, 1))
        if pruned is not None:
            log(f"trial {trial.number}: pruned ({pruned})")
            raise optuna.TrialPruned(pruned)
        if diverged is not None:  # this trial's values fail; the study goes on (optimize's `catch`)
            log(f"trial {trial.number}: failed, {diverged}")
            trial.set_user_attr("failure", str(diverged))
            raise diverged
        m = manifest["metrics"]
        value = m["eval_loss"] if spec.objective == "eval_loss" else m["val_exact_match"]
        log(
            f"trial {trial.number}: {spec.objective} {value:.4f}  "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        )
        return float(value)

    return objective


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _study(recipe, storage: str):
    import optuna

    spec = recipe.tune
    return optuna.create_study(
        study_name=recipe.name,
        storage=_storage(storage),
        load_if_exists=True,
        direction="minimize" if spec.objective == "eval_loss" else "maximize",
        sampler=optuna.samplers.TPESampler(seed=spec.sampler_seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=spec.pruner_startup_trials, n_warmup_steps=spec.pruner_warmup_steps
        ),
    )


def _finished(study) -> int:
    return sum(1 for t in study.trials if t.state.name in FINISHED)


def _worker(recipe, storage: str, folder: str, target: int, timeout) -> None:
    """One process of a parallel tune: optimise the shared study until it has `target` finished trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_transformers()
    study = _study(recipe, storage)
    # Failed trials count here too: a worker stops after `target` trials even if every one diverged.
    states = tuple(getattr(optuna.trial.TrialState, s) for s in (*FINISHED, "FAIL"))
    done = optuna.study.MaxTrialsCallback(target, states=states)
    with loaded_once():  # the dataset is read once for all of this process's trials
        study.optimize(
            _objective(recipe, Path(folder), print),
            timeout=timeout,
            callbacks=[done],
            gc_after_trial=True,
            catch=_trial_failures(),
        )


def tune(
    recipe,
    trials: int | None = None,
    storage: str | None = None,
    timeout: float | None = None,
    jobs: int = 1,
    log=print,
) -> TuneResult:
    """Run (or continue) the recipe's study until it has `trials` finished trials; write the best recipe."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_transformers()
    folder = recipe.run_path() / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(recipe)
    target = trials or recipe.tune.trials
    study = _study(recipe, storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        stale = optuna.storages.fail_stale_trials(study)
    if stale:
        log(f"marked {len(stale)} trial(s) of a killed run as failed")
    remaining = target - _finished(study)
    log(
        f"study {recipe.name!r} in {storage}: {_finished(study)} finished trials, running up to {max(remaining, 0)} more "
        f"(objective {recipe.tune.objective}, {len(recipe.tune.space)} parameters)"
    )
    if remaining > 0:
        jobs = _jobs_that_fit(recipe, jobs, log)
        if jobs == 1:
            done = optuna.study.MaxTrialsCallback(
                target, states=tuple(getattr(optuna.trial.TrialState, s) for s in FINISHED)
            )
            with loaded_once():  # the dataset is read once for all trials, not once per trial
                study.optimize(
                    _objective(recipe, folder, log),
                    n_trials=remaining,
                    timeout=timeout,
                    callbacks=[done],
                    gc_after_trial=True,
                    show_progress_bar=True,
                    catch=_trial_failures(),
                )
        else:
            if not storage.startswith(("sqlite:", "postgresql:", "mysql:")):
                raise InvalidValue(
                    f"--jobs {jobs}: parallel trials share the study through a database; --storage {storage} is not one"
                )
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            procs = [
                ctx.Process(target=_worker, args=(recipe, storage, str(folder), target, timeout)) for _ in range(jobs)
            ]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            failed = [p.exitcode for p in procs if p.exitcode]
            if failed:  # a worker that crashed is a bug: its traceback is above
                raise RuntimeError(f"tune: {len(failed)} of {jobs} worker processes failed (exit codes {failed})")
            study = _study(recipe, storage)
    return _report(recipe, study, storage, folder, log)


def _trial_failures() -> tuple:
    """What fails one trial (its values) rather than the study: a diverging run."""
    from medzoo.train.trainer import TrainingDiverged

    return (TrainingDiverged,)


def _jobs_that_fit(recipe, jobs: int, log) -> int:
    """Parallel trials only as far as memory allows (a trial needs ~3x the base weights on CPU)."""
    if jobs <= 1:
        return 1
    import psutil

    from medzoo.models.loading import recipe_base

    base = recipe_base(recipe)
    weights = sum(f.stat().st_size for f in Path(base.path).glob("*.safetensors"))
    need = max(3 * weights, 512 * 2**20)
    fit = max(1, int(psutil.virtual_memory().available // need))
    if fit < jobs:
        log(f"--jobs {jobs}: memory allows {fit} trial(s) at a time (~{need / 2**30:.1f} GiB each); using {fit}")
    return min(jobs, fit)


def _report(recipe, study, storage: str, folder: Path, log) -> TuneResult:
    import yaml

    from medzoo.atomic import write_json, write_text
    from medzoo.recipe import apply_values

    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "last_step": max(t.intermediate_values) if t.intermediate_values else None,
            "seconds": t.user_attrs.get("seconds"),
            "rss_mb_after": t.user_attrs.get("rss_mb_after"),
        }
        for t in study.trials
    ]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    best_recipe = None
    best_value = best_params = None
    if complete:
        best = study.best_trial
        best_value, best_params = best.value, dict(best.params)
        tuned = apply_values(recipe, best_params, name=f"{recipe.name}-tuned", run_dir=None)
        best_recipe = folder / "best-recipe.yaml"
        header = (
            f"# {recipe.name} with the best values of Optuna study {recipe.name!r} (trial {best.number}, "
            f"{recipe.tune.objective} {best_value:.4f}).\n# Train it: medzoo train {best_recipe}\n"
        )
        write_text(best_recipe, header + yaml.safe_dump(tuned.to_dict(), sort_keys=False))
        write_text(folder / "best-overrides.txt", "".join(f"--set {k}={v}\n" for k, v in best_params.items()))
    write_json(
        folder / "trials.json",
        {
            "study": recipe.name,
            "storage": storage,
            "objective": recipe.tune.objective,
            "best_value": best_value,
            "best_params": best_params,
            "trials": rows,
        },
    )
    counts = {s: sum(1 for r in rows if r["state"] == s) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    log(
        f"trials: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed, {counts['RUNNING']} running"
    )
    if best_params is not None:
        log(f"best {recipe.tune.objective}: {best_value:.4f}")
        log(
            "| parameter | best value |\n|---|---|\n"
            + "\n".join(f"| {k} | {_fmt(v)} |" for k, v in best_params.items())
        )
        log(f"ready-to-train recipe: {best_recipe}")
    return TuneResult(recipe.name, storage, best_value, best_params or {}, best_recipe, rows, folder)
