"""`medzoo zoo`, `medzoo data` and `medzoo recipes`: the embedded default and finding recipes."""

from __future__ import annotations

import sys

import click


@click.group()
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


# -- data


@click.group()
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


# -- recipes


@click.group()
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
