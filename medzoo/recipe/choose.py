"""Which recipe a command uses when none is named on the command line.

In this order:
1. the `recipe:` named in `medzoo.yaml` in the current folder (a project's own choice);
2. the only recipe in `./recipes`, when that folder is the user's own and holds exactly one;
3. the most recently trained run under `./runs` (what the user was just working on);
4. the embedded default, `phantom-tiny` (runs offline on a fresh checkout).
Several recipes in the user's `./recipes` and no trained run is ambiguous: an error lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medzoo.errors import InvalidValue
from medzoo.recipe.load import SHIPPED_RECIPES, available_recipes

DEFAULT_RECIPE = "phantom-tiny"
PROJECT_FILE = "medzoo.yaml"


@dataclass(frozen=True)
class RecipeChoice:
    recipe: str  # a name or a path, as `load_recipe` takes it
    reason: str

    def line(self) -> str:
        return f"recipe: {self.recipe} ({self.reason})"


def choose_recipe(folder: str | Path | None = None) -> RecipeChoice:
    """The recipe to use in `folder` (default: the current one) when the command line names none."""
    folder = Path(folder) if folder is not None else Path.cwd()
    named = _from_project_file(folder / PROJECT_FILE)
    if named:
        return RecipeChoice(named, f"named in {PROJECT_FILE}")
    own = _own_recipes(folder / "recipes")
    if len(own) == 1:
        return RecipeChoice(str(own[0]), "the only recipe in ./recipes")
    run = _latest_run(folder / "runs")
    if run:
        return run
    if own:
        names = ", ".join(p.stem for p in own)
        raise InvalidValue(
            f"no recipe given and ./recipes holds {len(own)} recipes ({names}); "
            f"name one on the command line or set `recipe:` in {PROJECT_FILE}"
        )
    return RecipeChoice(DEFAULT_RECIPE, "the embedded default: no medzoo.yaml, no recipe of your own, no trained run")


def _from_project_file(path: Path) -> str | None:
    import yaml

    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InvalidValue(f"{path}: not valid YAML ({getattr(e, 'problem', e)})") from e
    value = data.get("recipe") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(f"{path}: recipe: expected a recipe name or path, got {value!r}")
    value = value.strip()
    if value.endswith((".yaml", ".yml")) or "/" in value:  # a path is relative to the project file
        value = str(path.parent / value)
    return value


def _own_recipes(folder: Path) -> list[Path]:
    """The user's recipes in ./recipes; in a medzoo checkout that folder is the shipped zoo, not theirs."""
    if not folder.is_dir() or folder.resolve() == SHIPPED_RECIPES:
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def _latest_run(runs: Path) -> RecipeChoice | None:
    """The run whose training finished last (its manifest.json is written at the very end)."""
    import json
    import time

    manifests = sorted(runs.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    if not manifests:
        return None
    manifest = manifests[-1]
    run_dir = manifest.parent
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(manifest.stat().st_mtime))
    reason = f"the most recently trained run, {run_dir.relative_to(runs.parent)} ({when})"
    try:
        name = json.loads(manifest.read_text()).get("recipe")
    except (ValueError, UnicodeDecodeError):
        name = None
    if isinstance(name, str) and name == run_dir.name and name in available_recipes():
        return RecipeChoice(name, reason)
    saved = run_dir / "recipe.yaml"  # the resolved recipe train wrote: found even if its file moved
    if saved.is_file():
        return RecipeChoice(str(saved), reason)
    raise InvalidValue(f"{manifest}: names recipe {name!r}, which is not found, and {saved} is missing")
