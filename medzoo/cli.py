"""The `medzoo` command line: a thin layer over the library (argument parsing and printing only).

Nothing heavy is imported at module level, so `medzoo --help` stays instant.
"""

from __future__ import annotations

import json
import os
import sys

import click


class MedzooGroup(click.Group):
    """An expected error (medzoo.errors.MedzooError: bad input, missing state) is one line on stderr
    and exit 1; anything else is a bug and keeps its traceback. Usage errors stay click's (exit 2)."""

    def invoke(self, ctx):
        from medzoo.errors import MedzooError

        try:
            return super().invoke(ctx)
        except MedzooError as e:
            if os.environ.get("MEDZOO_DEBUG"):
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(1)


def _csv(value: str | None) -> list[str] | None:
    """A comma-separated option value as a list (None when empty)."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.group(cls=MedzooGroup)
@click.version_option(package_name="medzoo")
@click.option("--debug", is_flag=True, help="Show the traceback of expected errors too (also MEDZOO_DEBUG=1).")
def main(debug):
    """medzoo: fine-tune, benchmark and ship medical vision-language models.

    A recipe (YAML in recipes/) pairs a base VLM with an adapter and a dataset. Start with
    `medzoo recipes list`.
    """
    if debug:
        os.environ["MEDZOO_DEBUG"] = "1"  # inherited by launched training processes too


# ---------------------------------------------------------------- zoo


@main.group()
def zoo():
    """Tiny random-weight VLMs of the real architectures (the embedded default)."""


@zoo.command("list")
def zoo_list():
    """List the models `medzoo zoo build` can make."""
    from medzoo.zoo import ZOO

    for e in ZOO.values():
        click.echo(f"{e.name:18s} {e.description}  (architecture of {e.real_counterpart})")


@zoo.command("build")
@click.argument("name")
@click.option("--seed", default=0, show_default=True, help="Weight-initialisation seed.")
@click.option("--out", type=click.Path(file_okay=False), help="Folder to write (default: under $MEDZOO_HOME/zoo).")
@click.option("--force", is_flag=True, help="Rebuild even if the folder exists.")
def zoo_build(name, seed, out, force):
    """Build a tiny zoo model folder (reused if already built)."""
    from medzoo import zoo as zoo_lib

    path = zoo_lib.build(name, seed=seed, out=out, force=force)
    click.echo(str(path))


# ---------------------------------------------------------------- data


@main.group()
def data():
    """Datasets: the generated phantom and its export formats."""


@data.command("phantom")
@click.option(
    "--task",
    "tasks",
    default="vqa",
    show_default=True,
    help="Comma-separated: vqa,distance,angle,detection,lesion-size.",
)
@click.option("--n", "n_train", default=200, show_default=True, help="Training examples per task.")
@click.option("--n-val", default=50, show_default=True, help="Validation examples per task.")
@click.option("--n-test", default=50, show_default=True, help="Test examples per task.")
@click.option("--seed", default=0, show_default=True)
@click.option("--image-size", default=128, show_default=True)
@click.option("--box-origin", type=click.Choice(["lower-left", "upper-left"]), default="lower-left", show_default=True)
@click.option("--background", type=click.Choice(["synthetic", "dicom"]), default="synthetic", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["datasets", "llava"]), default="datasets", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to create.")
def data_phantom(tasks, n_train, n_val, n_test, seed, image_size, box_origin, background, fmt, out):
    """Write a deterministic phantom dataset whose answers depend on the image."""
    from medzoo.data.phantom import PhantomConfig, write

    cfg = PhantomConfig(
        tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()),
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        seed=seed,
        image_size=image_size,
        box_origin=box_origin,
        background=background,
    )
    path = write(cfg, out, fmt=fmt, progress=True)
    total = (n_train + n_val + n_test) * len(cfg.tasks)
    click.echo(f"wrote {total} examples ({', '.join(cfg.tasks)}) to {path}")


# ---------------------------------------------------------------- recipes


@main.group()
def recipes():
    """Find, validate and inspect recipes."""


@recipes.command("list")
def recipes_list():
    """List the recipes found by name, with their one-line descriptions."""
    from medzoo.recipe import RecipeError, available_recipes, load_recipe

    for name, path in available_recipes().items():
        try:
            r = load_recipe(str(path))
            click.echo(f"{name:34s} {r.base:30s} {r.description}")
        except RecipeError as e:
            click.echo(f"{name:34s} INVALID: {e}")


@recipes.command("show")
@click.argument("recipe")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a field, e.g. train.lr=2e-4.")
def recipes_show(recipe, overrides):
    """Print a recipe fully resolved (defaults filled in) as YAML."""
    import yaml

    from medzoo.recipe import load_recipe

    r = load_recipe(recipe, list(overrides))
    click.echo(f"# {r.source}  (config hash {r.config_hash()})")
    click.echo(yaml.safe_dump(r.to_dict(), sort_keys=False, width=100))


@recipes.command("validate")
@click.argument("recipes_", nargs=-1, metavar="RECIPE...")
def recipes_validate(recipes_):
    """Validate recipes (all found ones if none given); exit 1 if any is invalid."""
    from medzoo.recipe import RecipeError, available_recipes, load_recipe

    targets = list(recipes_) or [str(p) for p in available_recipes().values()]
    bad = 0
    for t in targets:
        try:
            load_recipe(t)
            click.echo(f"ok       {t}")
        except RecipeError as e:
            bad += 1
            click.echo(f"invalid  {e}")
    sys.exit(1 if bad else 0)


# ---------------------------------------------------------------- train


@main.command()
@click.argument("recipe")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field, e.g. train.lr=2e-4."
)
@click.option("--resume", is_flag=True, help="Continue the run from its last checkpoint / finished stage.")
@click.option("--overwrite", is_flag=True, help="Delete an existing run directory and start over.")
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
def train(recipe, overrides, resume, overwrite, dry_run, nproc, launcher, launch_config, launcher_args):
    """Train the recipe's LoRA / QLoRA adapter (writes <run_dir>/adapter and manifest.json)."""
    from medzoo import launch
    from medzoo.recipe import load_recipe
    from medzoo.train import train as run_train

    r = load_recipe(recipe, list(overrides))
    if (nproc or launcher or launch_config) and not launch.launched():
        import subprocess

        args = launch.train_args_from_argv(sys.argv)
        if args is None:  # called as a function, not from the command line: rebuild the arguments
            args = (
                [recipe, *sum((["--set", o] for o in overrides), [])]
                + ["--resume"] * resume
                + ["--overwrite"] * overwrite
                + ["--dry-run"] * dry_run
            )
        cmd = launch.launch_command(args, nproc or 1, launcher, launch_config, launcher_args)
        click.echo("launching: " + " ".join(cmd), err=True)
        sys.exit(subprocess.call(cmd))
    result = run_train(r, resume=resume, overwrite=overwrite, dry_run=dry_run, log=click.echo)
    if dry_run and launch.is_main():
        click.echo(json.dumps(result, indent=2))


@main.command()
@click.argument("recipe")
@click.option("--no-sample", is_flag=True, help="Skip rendering a processed sample (no model or processor needed).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def check(recipe, no_sample, overrides):
    """Pre-flight a recipe's data: annotations valid, every image decodes, counts, one processed sample."""
    from medzoo.check import check as run_check
    from medzoo.recipe import load_recipe

    r = load_recipe(recipe, list(overrides))
    report = run_check(r, render_sample=not no_sample, log=click.echo)
    if not report.ok:
        click.echo(
            f"error: {len(report.unreadable)} unreadable image(s); fix them or they are dropped (and counted) in training",
            err=True,
        )
        sys.exit(1)
    click.echo("ok")


# ---------------------------------------------------------------- tune


@main.command()
@click.argument("recipe")
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
    from medzoo.recipe import load_recipe
    from medzoo.tune import tune as run_tune

    r = load_recipe(recipe, list(overrides))
    run_tune(r, trials=trials, storage=storage, timeout=timeout, jobs=jobs, log=click.echo)


# ---------------------------------------------------------------- generate


@main.command()
@click.argument("recipe")
@click.option("--split", default="test", show_default=True)
@click.option("--index", default=0, show_default=True, help="Which example of the split.")
@click.option("--engine", "engines", default="hf", show_default=True, help="Comma-separated: hf,vllm.")
@click.option("--prompt", "mode", type=click.Choice(["none", "static", "adaptive"]), default="none", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def generate(recipe, split, index, engines, mode, overrides, as_json):
    """Answer one dataset example with the recipe's base model, per engine."""
    from medzoo.inference import ENGINES, generate_for_recipe
    from medzoo.recipe import load_recipe

    chosen = tuple(_csv(engines) or ())
    for e in chosen:
        if e not in ENGINES:
            raise click.BadParameter(f"expected one of {', '.join(ENGINES)}, got {e!r}", param_hint="--engine")
    r = load_recipe(recipe, list(overrides))
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


# ---------------------------------------------------------------- bench


@main.command()
@click.argument("recipe")
@click.option("--models", default="base,tuned", show_default=True, help="Comma-separated: base,tuned.")
@click.option(
    "--prompts",
    "modes",
    default=None,
    help="Comma-separated prompt modes: none,static,adaptive (default: the recipe's).",
)
@click.option("--split", default=None, help="Evaluation split (default: the recipe's bench.split).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate the first N examples.")
@click.option(
    "--engine", type=click.Choice(["vllm", "hf"]), default=None, help="Default: the recipe's bench.engine (vllm)."
)
@click.option(
    "--adapter",
    "adapters",
    multiple=True,
    type=click.Path(),
    help="Evaluate this adapter folder (repeatable) instead of the recipe's.",
)
@click.option(
    "--lora-mode",
    type=click.Choice(["auto", "lora", "merged"]),
    default="auto",
    show_default=True,
    help="vLLM: serve adapters as LoRA requests on one engine, or merge each and serve it separately.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Results folder (default: <run_dir>/bench/<split>-<engine>).",
)
@click.option("--overwrite", is_flag=True, help="Replace a results folder made with other settings.")
@click.option(
    "--chunk-size",
    default=512,
    show_default=True,
    type=click.IntRange(min=1),
    help="Generations per batched engine call; records are saved after each (resume granularity).",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def bench(recipe, models, modes, split, limit, engine, adapters, lora_mode, out, overwrite, chunk_size, overrides):
    """Evaluate base and tuned models under each prompt mode; print the table, write results + plot."""
    from medzoo.bench import run_bench
    from medzoo.recipe import load_recipe

    r = load_recipe(recipe, list(overrides))
    result = run_bench(
        r,
        models=_csv(models),
        modes=_csv(modes),
        split=split,
        limit=limit,
        engine=engine,
        adapters=list(adapters),
        lora_mode=lora_mode,
        out=out,
        overwrite=overwrite,
        chunk_size=chunk_size,
        log=click.echo,
    )
    click.echo(result.markdown)
    t = result.summary["timing"]
    if t.get("generations"):
        click.echo(
            f"{t['generations']} generations in {t['total_s']:.1f} s (engine start {t.get('engine_start_s', 0):.1f} s, "
            f"generate {t.get('generate_s', 0):.1f} s = {t['generations_per_s']:.1f}/s)"
        )
    click.echo(f"results: {result.out} (records.jsonl, summary.json/.csv/.md, plot.png)")


# ---------------------------------------------------------------- merge


@main.command()
@click.argument("recipe")
@click.option("--adapter", type=click.Path(), default=None, help="Adapter folder (default: <run_dir>/adapter).")
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Output folder (default: <run_dir>/merged)."
)
@click.option(
    "--check", "n_check", default=4, show_default=True, help="Examples whose logits must agree before saving."
)
@click.option("--force", is_flag=True, help="Merge again even if the folder holds this adapter's merge.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def merge(recipe, adapter, out, n_check, force, overrides):
    """Merge the adapter into the full-precision base (checked logits) and save a loadable folder."""
    from medzoo.merge import merge_for_recipe
    from medzoo.recipe import load_recipe

    r = load_recipe(recipe, list(overrides))
    info = merge_for_recipe(r, adapter=adapter, out=out, n_check=n_check, force=force, log=click.echo)
    click.echo(json.dumps(info, indent=2))


# ---------------------------------------------------------------- export


@main.command()
@click.argument("recipe")
@click.option("--gguf", is_flag=True, required=True, help="Export GGUF (text model + mmproj) for llama.cpp / Ollama.")
@click.option("--quant", default="f16,q8_0,q4_k_m", show_default=True, help="Comma-separated: f16,q8_0,q4_k_m.")
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Output folder (default: <run_dir>/export)."
)
@click.option(
    "--parity",
    "n_parity",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Bench examples in the parity check.",
)
@click.option(
    "--leave-output-tensor",
    is_flag=True,
    help="Keep output.weight unquantised (llama-quantize's flag): larger files, logits closest to f16.",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def export(recipe, gguf, quant, out, n_parity, leave_output_tensor, overrides):
    """Merge, convert to GGUF + mmproj, quantise, write a Modelfile, and check parity with HF."""
    from medzoo.export import export_gguf
    from medzoo.recipe import load_recipe

    r = load_recipe(recipe, list(overrides))
    result = export_gguf(
        r, quants=_csv(quant), out=out, n_parity=n_parity, log=click.echo, leave_output_tensor=leave_output_tensor
    )
    p = result.parity
    click.echo(
        f"\nparity with the merged transformers model on {p['examples']} {p['split']} examples (greedy; task metric HF {p['reference_metric']:.3f}):"
    )
    click.echo("| quant | size MB | answers equal | task metric |")
    click.echo("|---|---|---|---|")
    for q in p["quantizations"]:
        click.echo(f"| {q['quant']} | {q['size_mb']:.1f} | {q['agreement']:.3f} | {q['metric']:.3f} |")
    click.echo(f"chat template in the GGUF renders the training prompt: {p['chat_template_matches_training']}")
    click.echo(f"llama.cpp tokenizes the training prompt like the HF tokenizer: {p['tokenization_matches_training']}")
    click.echo(f"wrote {result.out}: {', '.join(result.files)}")


# ---------------------------------------------------------------- card / publish


@main.command()
@click.argument("recipe")
@click.option("--repo", default=None, help="OWNER/NAME the card's usage snippets point at.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Card file (default: <run_dir>/README.md).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def card(recipe, repo, out, overrides):
    """Write the Hugging Face model card (README.md) of a trained recipe."""
    from pathlib import Path

    from medzoo.atomic import write_text
    from medzoo.card import build_card
    from medzoo.recipe import load_recipe

    r = load_recipe(recipe, list(overrides))
    path = Path(out) if out else r.run_path() / "README.md"
    write_text(path, str(build_card(r, repo_id=repo)))
    click.echo(f"model card: {path}")


@main.command()
@click.argument("recipe")
@click.option("--repo", required=True, help="Hub repository OWNER/NAME (created if missing).")
@click.option("--what", default="adapter", show_default=True, help="Comma-separated: adapter,merged,gguf.")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--revision", default=None, help="Branch to commit to.")
@click.option("--dry-run", is_flag=True, help="Only write and list the folder that would be uploaded.")
@click.option("--force", is_flag=True, help="Overwrite files that exist in the repo with different content.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def publish(recipe, repo, what, private, revision, dry_run, force, overrides):
    """Upload a trained recipe (card + artefacts) to the Hugging Face Hub in one commit."""
    from medzoo.publish import publish as run_publish
    from medzoo.recipe import load_recipe

    r = load_recipe(recipe, list(overrides))
    result = run_publish(
        r, repo, what=_csv(what), private=private, revision=revision, dry_run=dry_run, force=force, log=click.echo
    )
    click.echo(f"staged {len(result.files)} files in {result.folder}:")
    for f in result.files:
        click.echo(f"  {f}")
    click.echo(f"model card: {result.folder / 'README.md'}")
    if result.uploaded:
        click.echo(
            f"uploaded to {result.repo_id}: {result.commit_message}"
            + (f" ({result.commit_url})" if result.commit_url else "")
        )
    else:
        click.echo(f"not uploaded: {result.skipped_reason}")


if __name__ == "__main__":
    main()
