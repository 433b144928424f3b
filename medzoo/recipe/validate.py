"""Raw YAML -> schema dataclasses, with one-line errors naming the field and what was expected."""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from typing import Any, Literal, Union

from medzoo.recipe.schema import ParamSpec, Recipe, RecipeError


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" (or null)" if type(None) in args else "")
    if origin is list:
        if typing.get_origin(args[0]) is Literal:
            return "a list with items from " + ", ".join(repr(a) for a in typing.get_args(args[0]))
        return f"a list of {_plural(_describe(args[0]))}"
    if origin is dict:
        return f"a mapping of names to {_plural(_describe(args[1]))}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            return text[len(article) :] + "s" if not text.startswith(article + "mapping") else "mappings"
    return text


def _show(value) -> str:
    return repr(value) if not isinstance(value, (dict, list)) else json.dumps(value)[:60]


def _convert(value, tp, where: str, meta: dict):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, where, meta)
            except RecipeError as e:
                errors.append(e)
        if "expected" in meta and type(None) in args:  # the field's own rule says more than its type
            raise RecipeError(f"{where}: expected {meta['expected']} (or null), got {_show(value)}")
        raise RecipeError(f"{where}: expected {_describe(tp)}, got {_show(value)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {_show(value)}")
        return build(tp, value, where)
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"{where}: expected one of {', '.join(repr(a) for a in args)}, got {_show(value)}{hint}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected {_describe(tp)}, got {_show(value)}")
        return [_convert(v, args[0], f"{where}[{i}]", {}) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected {_describe(tp)}, got {_show(value)}")
        return {str(k): _convert(v, args[1], f"{where}.{k}", {}) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            expected = meta.get("expected", "an integer")
            raise RecipeError(f"{where}: expected {expected}, got {_show(value)}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            expected = meta.get("expected", "a number")
            raise RecipeError(f"{where}: expected {expected}, got {_show(value)}")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {_show(value)}")
    if "check" in meta and not meta["check"](value):
        raise RecipeError(f"{where}: expected {meta['expected']}, got {_show(value)}")
    return value


def build(cls, raw: dict, where: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    prefix = f"{where}." if where else ""
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(fields)}"
            raise RecipeError(f"{prefix}{key}: unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in raw:
            kwargs[name] = _convert(raw[name], hints[name], f"{prefix}{name}", dict(f.metadata))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{prefix}{name}: required key is missing (expected {_describe(hints[name])})")
    return cls(**kwargs)


def cross_checks(recipe: Recipe) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", recipe.name) or recipe.name in (".", ".."):
        # the name is a folder under runs/ and a Hub repo name: `../x` would write outside runs/
        raise RecipeError(f"name: expected letters, digits and . _ + - (no path), got {recipe.name!r}")
    if recipe.data.mix:
        from medzoo.data.records import AnnotationError, parse_mix

        try:
            names = parse_mix(recipe.data.mix)
        except AnnotationError as e:
            raise RecipeError(str(e)) from e
        for name, _ in names:
            if name not in recipe.data.registry:
                raise RecipeError(
                    f"data.mix: {name!r} is not in data.registry (has: {', '.join(recipe.data.registry) or 'nothing'})"
                )
    elif recipe.data.source != "phantom" and not recipe.data.path:
        raise RecipeError(f"data.path: required when data.source is {recipe.data.source!r}")
    if recipe.base.startswith("zoo:"):
        from medzoo.zoo import ZOO

        name = recipe.base[4:]
        if name not in ZOO:
            close = difflib.get_close_matches(name, ZOO, n=1)
            hint = f" (did you mean 'zoo:{close[0]}'?)" if close else ""
            raise RecipeError(
                f"base: unknown zoo model {recipe.base!r}{hint}; known: {', '.join('zoo:' + z for z in ZOO)}"
            )
    for path, p in recipe.tune.space.items():
        _check_param(recipe, path, p)
    image = recipe.image
    if image.min_pixels is not None and image.max_pixels is not None and image.min_pixels > image.max_pixels:
        # the processor would size every image to min_pixels' bound against max_pixels: one token
        raise RecipeError(
            f"image.min_pixels: expected at most image.max_pixels ({image.max_pixels}), got {image.min_pixels}"
        )
    for name, cat in recipe.prompts.adaptive.items():
        if not cat.keywords:
            raise RecipeError(f"prompts.adaptive.{name}.keywords: expected at least one keyword")


def _check_param(recipe: Recipe, path: str, p: ParamSpec) -> None:
    where = f"tune.space.{path}"
    node = recipe
    for part in path.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            raise RecipeError(f"{where}: not a recipe field (expected a path such as train.lr or adapter.r)")
        node = getattr(node, part)
    if p.type == "categorical":
        if not p.choices:
            raise RecipeError(f"{where}.choices: expected at least one choice for a categorical parameter")
    elif p.low is None or p.high is None or p.low > p.high:
        raise RecipeError(f"{where}: expected low <= high for a {p.type} parameter, got low={p.low} high={p.high}")
    elif p.log and p.low <= 0:
        raise RecipeError(f"{where}.low: expected a positive number on a log scale, got {p.low}")


def apply_values(recipe: Recipe, values: dict[str, Any], **top: Any) -> Recipe:
    """A copy of `recipe` with dotted-path fields set (e.g. {"train.lr": 1e-4}), validated again."""
    raw = recipe.to_dict()
    raw.update(top)
    for path, value in values.items():
        node = raw
        *parents, leaf = path.split(".")
        for k in parents:
            node = node[k]
        node[leaf] = value
    try:
        out = build(Recipe, raw, "")
        cross_checks(out)
    except RecipeError as e:
        raise RecipeError(f"{recipe.source or recipe.name}: {e}") from e
    out.source = recipe.source
    return out
