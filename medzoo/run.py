"""A run directory and the manifest train writes into it, read by every later stage.

Later stages (bench, merge, export, card, publish) take what training used from the manifest
instead of re-deriving it from the current recipe, and refuse a recipe whose base differs: an
adapter only means something on the base it was trained on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from medzoo.errors import InvalidValue, MissingState, StateMismatch


@dataclass(frozen=True)
class RunDir:
    """The names inside <run_dir> that later stages read (train writes them)."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"


REQUIRED = ("medzoo_version", "recipe", "config_hash", "base", "base_path", "family", "adapter_method")


@dataclass
class Manifest:
    """What a finished training run was: written by train, read by the stages after it."""

    medzoo_version: str
    recipe: str
    config_hash: str
    base: str
    base_path: str
    family: str
    adapter_method: str
    train_prompt_mode: str | None = None
    metrics: dict = field(default_factory=dict)
    stages: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # the rest (drops, sizes, timings), kept as written

    def to_dict(self) -> dict:
        d = asdict(self)
        return {**d.pop("extra"), **d}

    @classmethod
    def from_dict(cls, data: dict, source: str = "manifest.json") -> Manifest:
        names = {f.name for f in fields(cls)} - {"extra"}
        missing = [n for n in REQUIRED if n not in data]
        if missing:
            raise InvalidValue(f"{source}: missing {', '.join(missing)}; it was not written by `medzoo train`")
        known = {k: v for k, v in data.items() if k in names}
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})


def read_manifest(run_dir: str | Path, recipe_name: str | None = None) -> Manifest:
    """The manifest of a finished run, or a one-line error saying how to make one."""
    path = RunDir(Path(run_dir)).manifest
    if not path.exists():
        hint = f"; run `medzoo train {recipe_name}` first" if recipe_name else ""
        raise MissingState(f"{path}: no trained run{hint}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidValue(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InvalidValue(f"{path}: expected a JSON object, got {type(data).__name__}")
    return Manifest.from_dict(data, str(path))


def check_run_base(recipe, stage: str) -> Manifest | None:
    """The recipe's own run's manifest, refusing it when its base is not the recipe's (None: no manifest)."""
    if not RunDir(recipe.run_path()).manifest.exists():
        return None
    manifest = read_manifest(recipe.run_path(), recipe.name)
    check_same_base(recipe, manifest, stage)
    return manifest


def check_same_base(recipe, manifest: Manifest, stage: str) -> None:
    """Refuse to use a run's adapter with a recipe whose base is not the one it was trained on."""
    if manifest.base != recipe.base:
        raise StateMismatch(
            f"{stage}: the adapter in {recipe.run_path()} was trained on base {manifest.base!r}, "
            f"but the recipe asks for {recipe.base!r}; train it on that base first or use another run_dir"
        )
