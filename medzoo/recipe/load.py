"""Finding recipes (by name or path), `extends:`, `--set` overrides, and the prompt settings of a recipe."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from medzoo.recipe.schema import Recipe, RecipeError
from medzoo.recipe.validate import build, cross_checks

# The recipes shipped with medzoo (the repository's recipes/, next to the package).
SHIPPED_RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def recipe_dirs() -> list[Path]:
    """Where recipe names are looked up: $MEDZOO_RECIPES (colon-separated), ./recipes, the shipped ones."""
    dirs = [Path(p) for p in os.environ.get("MEDZOO_RECIPES", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "recipes", SHIPPED_RECIPES]
    seen, out = set(), []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out


def available_recipes() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in recipe_dirs():
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def find_recipe(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not p.exists():
            raise RecipeError(f"{name_or_path}: no such recipe file")
        return p
    known = available_recipes()
    if name_or_path in known:
        return known[name_or_path]
    close = difflib.get_close_matches(name_or_path, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise RecipeError(f"{name_or_path}: no recipe with this name{hint}; see `medzoo recipes list`")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=2e-4` -> (["train", "lr"], 0.0002). Values are parsed as YAML scalars/lists."""
    import yaml

    if "=" not in text:
        raise RecipeError(f"--set {text}: expected KEY=VALUE, e.g. train.lr=2e-4")
    key, value = text.split("=", 1)
    if not key.strip():
        raise RecipeError(f"--set {text}: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as e:
        raise RecipeError(f"--set {text}: the value is not valid YAML ({getattr(e, 'problem', e)})") from e
    if isinstance(parsed, str) and _looks_like_float(parsed):
        parsed = float(parsed)  # YAML 1.1 reads 2e-4 as a string
    return key.strip().split("."), parsed


def _looks_like_float(s: str) -> bool:
    try:
        float(s)
        return any(c in s.lower() for c in ".e") and s.strip().lower() not in ("nan", "inf", "-inf")
    except ValueError:
        return False


def _fix_yaml_floats(node):
    if isinstance(node, dict):
        return {k: _fix_yaml_floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_yaml_floats(v) for v in node]
    if isinstance(node, str) and _looks_like_float(node):
        return float(node)
    return node


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Load, override and validate a recipe; raises RecipeError with a one-line message."""

    path = find_recipe(name_or_path)
    label = _label(path)
    raw = _read_mapping(path, label)
    raw = _resolve_extends(raw, label, seen=(str(path.resolve()),))
    raw["name"] = raw.get("name") if raw.get("name") and "_own_name" in raw else path.stem
    raw.pop("_own_name", None)
    overridden = set()
    for text in overrides or []:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {text}: {k} is not a mapping")
        node[keys[-1]] = value
        overridden.add(".".join(keys))
    try:
        recipe = build(Recipe, raw, "")
        cross_checks(recipe)
    except RecipeError as e:
        msg = str(e)
        field_path = msg.split(":", 1)[0]
        suffix = " (from --set)" if any(field_path.startswith(o) for o in overridden) else ""
        raise RecipeError(f"{label}: {msg}{suffix}") from e
    recipe.source = str(path)
    return recipe


def _resolve_extends(raw: dict, label: str, seen: tuple) -> dict:
    """`extends: OTHER` = OTHER's YAML deep-merged under this file's keys (a tiny twin of a seed recipe
    states only what differs). Mappings merge key by key; lists and scalars replace."""

    own_name = "name" in raw
    parent_name = raw.pop("extends", None)
    if parent_name is None:
        return {**raw, **({"_own_name": True} if own_name else {})}
    sibling = Path(seen[-1]).parent / f"{parent_name}.yaml"  # a parent next to the file comes first
    try:
        parent_path = sibling if sibling.is_file() else find_recipe(str(parent_name))
    except RecipeError as e:
        raise RecipeError(f"{label}: extends: {e}") from e
    if str(parent_path.resolve()) in seen:
        raise RecipeError(f"{label}: extends: {parent_name!r} extends itself (cycle)")
    parent = _read_mapping(parent_path, _label(parent_path))
    parent = _resolve_extends(parent, _label(parent_path), seen + (str(parent_path.resolve()),))
    parent.pop("name", None)
    parent.pop("_own_name", None)
    parent.pop("run_dir", None)
    merged = _deep_merge(parent, raw)
    if own_name:
        merged["_own_name"] = True
    return merged


def _read_mapping(path: Path, label: str) -> dict:
    """A recipe file's YAML as a mapping (floats fixed), or a one-line RecipeError naming the file."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise RecipeError(f"{label}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise RecipeError(f"{label}: {where}: not valid YAML ({getattr(e, 'problem', e)})") from e
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{label}: expected a mapping at the top level, got {type(raw).__name__}")
    return _fix_yaml_floats(raw)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def prompt_settings(recipe: Recipe):
    """The recipe's prompts as medzoo.prompts.PromptSettings."""
    from medzoo.prompts import PromptSettings

    adaptive = {k: {"keywords": v.keywords, "prompt": v.prompt} for k, v in recipe.prompts.adaptive.items()}
    return PromptSettings(static=recipe.prompts.static, adaptive=adaptive, train_mode=recipe.prompts.train_mode)
