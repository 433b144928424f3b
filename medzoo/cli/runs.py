"""`medzoo train`, `check`, `tune` and `generate`: commands that read a recipe's data and train or answer."""

from __future__ import annotations

import json
import sys

import click

from medzoo.cli.common import csv_list, load_chosen_recipe


@click.command()
@click.argument("recipe", required=False)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field, e.g. train.lr=2e-4."
)
@click.option("--resume", is_flag=True, help="Continue the run from its last checkpoint / finished stage.")
@click.option("--overwrite", is_flag=True, help="Delete an existing run directory and start over.")
@click.option(
    "--accept-recipe-changes",
    is_flag=True,
    help="With --resume: continue although training settings (train.*) changed since the run started.",
)
@click.option(
    "--dry-run", is_flag=True, help="Load recipe, model and first batch; print sizes, steps and memory; exit."
)
@click.option(
    "--nproc", type=click.IntRange(min=1), default=None, help="Processes per node (GPUs, or CPU workers with gloo)."
)
@click.option(
    "--launcher",
    type=click.Choice(["torchrun", "accelerate"]),
    default=None,
    help="Default: torchrun, or accelerate with --config.",
)
@click.option(
    "--config",
    "launch_config",
    default=None,
    help="accelerate config: ddp, fsdp, zero2, zero3, zero3-offload, or a file.",
)
@click.option(
    "--launcher-args",
    default="",
    help="Passed to the launcher as is (multi-node: '--nnodes 2 --node-rank 0 --master-addr HOST').",
)
def train(
    recipe, overrides, resume, overwrite, accept_recipe_changes, dry_run, nproc, launcher, launch_config, launcher_args
):
    """Train the recipe's LoRA / QLoRA adapter (writes <run_dir>/adapter and manifest.json)."""
    from medzoo import launch
    from medzoo.train import train as run_train

    r = load_chosen_recipe(recipe, overrides)
    launch.check_adapter_fits_config(r.adapter.method, launch_config)
    if (nproc or launcher or launch_config) and not launch.launched():
        import subprocess

        args = launch.train_args_from_argv(sys.argv)
        if args is not None and recipe is None:  # every process trains the recipe chosen here
            args = [r.source, *args]
        if args is None:  # called as a function, not from the command line: rebuild the arguments
            args = (
                [recipe or r.source, *sum((["--set", o] for o in overrides), [])]
                + ["--resume"] * resume
                + ["--overwrite"] * overwrite
                + ["--accept-recipe-changes"] * accept_recipe_changes
                + ["--dry-run"] * dry_run
            )
        cmd = launch.launch_command(args, nproc or 1, launcher, launch_config, launcher_args)
        click.echo("launching: " + " ".join(cmd), err=True)
        sys.exit(subprocess.call(cmd))
    try:
        result = run_train(
            r,
            resume=resume,
            overwrite=overwrite,
            dry_run=dry_run,
            log=click.echo,
            accept_recipe_changes=accept_recipe_changes,
        )
    except KeyboardInterrupt:
        # Checkpoints written so far are kept (one cut short while saving has no completion marker).
        hint = "" if dry_run else f"; continue with `medzoo train {recipe or r.name} --resume`"
        click.echo(f"\ninterrupted{hint}", err=True)
        sys.exit(130)
    if dry_run and launch.is_main():
        click.echo(json.dumps(result, indent=2))


@click.command()
@click.argument("recipe", required=False)
@click.option("--no-sample", is_flag=True, help="Skip rendering a processed sample (no model or processor needed).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def check(recipe, no_sample, overrides):
    """Pre-flight a recipe's data: annotations valid, every image decodes, counts, one processed sample."""
    from medzoo.check import check as run_check

    r = load_chosen_recipe(recipe, overrides)
    report = run_check(r, render_sample=not no_sample, log=click.echo)
    if not report.ok:
        for problem in report.problems:
            click.echo(f"error: {problem}", err=True)
        if report.unreadable:
            click.echo(
                f"error: {len(report.unreadable)} unreadable image(s); fix them or they are dropped (and counted) in training",
                err=True,
            )
        sys.exit(1)
    click.echo("ok")


# -- tune


@click.command()
@click.argument("recipe", required=False)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=None,
    help="Finished trials the study should have (default: the recipe's tune.trials).",
)
@click.option("--storage", default=None, help="Optuna storage URL (default: sqlite:///<run_dir>/tune/study.db).")
@click.option("--timeout", type=float, default=None, help="Stop starting new trials after this many seconds.")
@click.option(
    "--jobs",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Parallel trial processes (capped by free memory).",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def tune(recipe, trials, storage, timeout, jobs, overrides):
    """Search hyper-parameters with Optuna (TPE + median pruning); resumable; writes a ready-to-train recipe."""
    from medzoo.tune import tune as run_tune

    r = load_chosen_recipe(recipe, overrides)
    run_tune(r, trials=trials, storage=storage, timeout=timeout, jobs=jobs, log=click.echo)


# -- generate


@click.command()
@click.argument("recipe", required=False)
@click.option("--split", default="test", show_default=True)
@click.option("--index", default=0, show_default=True, help="Which example of the split.")
@click.option("--engine", "engines", default="hf", show_default=True, help="Comma-separated: hf,vllm.")
@click.option("--prompt", "mode", type=click.Choice(["none", "static", "adaptive"]), default="none", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def generate(recipe, split, index, engines, mode, overrides, as_json):
    """Answer one dataset example with the recipe's base model, per engine."""
    from medzoo.inference import ENGINES, generate_for_recipe

    chosen = tuple(csv_list(engines) or ())
    for e in chosen:
        if e not in ENGINES:
            raise click.BadParameter(f"expected one of {', '.join(ENGINES)}, got {e!r}", param_hint="--engine")
    r = load_chosen_recipe(recipe, overrides)
    result = generate_for_recipe(r, split=split, index=index, engines=chosen, mode=mode)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"model:     {result['model']}")
    click.echo(f"example:   {result['id']}")
    click.echo(f"prompt:    {result['prompt']!r}")
    click.echo(f"reference: {result['reference']!r}")
    for engine, text in result["answers"].items():
        click.echo(f"{engine + ':':10s} {text!r}")
