"""A run directory and the manifest train writes into it: the one source later stages read.

Training records the recipe as trained, the image settings the processor used and the adapter's
digest. Later stages (bench, merge, export, serve, card, publish) open the run with `open_run`,
which compares the recipe they were given with the trained one:

- a changed field the adapter's inputs depend on (base, the zoo seed, image settings, the prompt
  mode training rendered and that mode's system prompt) is refused with the field named: feeding
  the adapter other inputs than it was trained on gives numbers about something else;
- any other change (more training steps, another lr, bench settings) is allowed and listed in
  `TrainedRun.changed`: bench records it, and the card reads hyper-parameters from the trained
  recipe, never from the edited one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from medzoo.errors import InvalidValue, MedzooError, MissingState, StateMismatch


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
    trained_recipe: dict = field(default_factory=dict)  # Recipe.to_dict() as training ran it
    image_settings: dict = field(default_factory=dict)  # the processor's image settings in training
    adapter_digest: str | None = None  # medzoo.adapters.adapter_digest of <run_dir>/adapter
    data_fingerprint: str | None = None
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
        raise InvalidValue(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise InvalidValue(f"{path}: expected a JSON object, got {type(data).__name__}")
    return Manifest.from_dict(data, str(path))


def flat_fields(d: dict, prefix: str = "") -> dict:
    """A nested recipe dict as {"train.lr": 0.0002, ...} (empty mappings stay one field)."""
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat_fields(v, key + "."))
        else:
            out[key] = v
    return out


def changed_fields(before: dict, after: dict) -> list[str]:
    """The flat fields whose values differ between two recipe dicts."""
    a, b = flat_fields(before), flat_fields(after)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def adapter_input_fields(recipe_dict: dict) -> tuple[str, ...]:
    """Field prefixes that decide what the adapter is fed at inference (see the module doc)."""
    mode = (recipe_dict.get("prompts") or {}).get("train_mode", "none")
    fields_ = ["base", "image.", "prompts.train_mode"]
    if mode in ("static", "adaptive"):
        fields_.append(f"prompts.{mode}")
    if str(recipe_dict.get("base", "")).startswith("zoo:"):
        fields_.append("seed")  # a zoo base's weights come from its seed
    return tuple(fields_)


@dataclass(frozen=True)
class TrainedRun:
    """A finished training run as later stages see it: its folder, manifest and recipe as trained."""

    dir: RunDir
    manifest: Manifest
    recipe: object  # medzoo.recipe.Recipe, as training ran it
    changed: list[str]  # fields the current recipe changed since training (none of the adapter's inputs)

    @property
    def adapter(self) -> Path:
        return self.dir.adapter

    @property
    def prompt_mode(self) -> str:
        """The prompt mode training rendered (the manifest's train_prompt_mode)."""
        return self.manifest.train_prompt_mode or self.recipe.prompts.train_mode

    def check_image_settings(self, settings: dict, stage: str) -> None:
        """Refuse a base whose processor now sizes images otherwise than in training (the recipe
        leaves a field to the processor, and the processor changed, e.g. a Hub update)."""
        trained = self.manifest.image_settings
        if trained and dict(settings) != trained:
            raise StateMismatch(
                f"{stage}: the base's processor sizes images as {dict(settings)}, but {self.dir.root} was trained "
                f"with {trained}; set those image.* fields in the recipe, or retrain"
            )

    def prompt_settings(self):
        """The system prompts training rendered (medzoo.prompts.PromptSettings)."""
        from medzoo.recipe import prompt_settings

        return prompt_settings(self.recipe)

    def record(self) -> dict:
        """What a stage's results note about the run they used."""
        return {
            "run_dir": str(self.dir.root),
            "adapter_digest": self.manifest.adapter_digest,
            "config_hash": self.manifest.config_hash,
            "manifest_sha256": _sha256(self.dir.manifest),
            "data_fingerprint": self.manifest.data_fingerprint,
            "train_prompt_mode": self.prompt_mode,
            "recipe_changes_since_training": self.changed,
        }


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def open_run(recipe, stage: str) -> TrainedRun | None:
    """The recipe's own trained run (None: not trained), refusing a recipe that changed one of the
    adapter's inputs since training with one line naming the field."""
    from medzoo.recipe.validate import build

    run_dir = RunDir(recipe.run_path())
    if not run_dir.manifest.exists():
        return None
    manifest = read_manifest(run_dir.root, recipe.name)
    check_same_base(recipe, manifest, stage)
    trained = manifest.trained_recipe or _recorded_recipe(run_dir.root)
    if trained is None:
        raise StateMismatch(
            f"{run_dir.manifest}: written by medzoo {manifest.medzoo_version}, which did not record the recipe "
            f"it trained with; retrain with `medzoo train {recipe.name} --overwrite`"
        )
    now = recipe.to_dict()
    changed = changed_fields(trained, now)
    inputs = adapter_input_fields(trained)
    refused = [k for k in changed if k.startswith(inputs)]
    if refused:
        was, is_ = flat_fields(trained), flat_fields(now)
        described = "; ".join(f"{k} is {is_.get(k)!r}, trained with {was.get(k)!r}" for k in refused[:4])
        raise StateMismatch(
            f"{stage}: the recipe changed since {run_dir.root} was trained ({described}); the adapter only "
            f"fits what it was trained on: put the field back, or retrain with `medzoo train {recipe.name} --overwrite`"
        )
    try:
        as_trained = build(type(recipe), trained, "")
    except MedzooError as e:
        raise InvalidValue(f"{run_dir.manifest}: trained_recipe: {e}") from e
    return TrainedRun(run_dir, manifest, as_trained, [k for k in changed if k not in ("name",)])


def prompts_source(recipe, trained: TrainedRun | None):
    """The recipe whose prompts feed the adapter: the trained one when there is a run."""
    return trained.recipe if trained else recipe


def _recorded_recipe(root: Path) -> dict | None:
    """A run trained before manifests carried the recipe: the recipe.yaml train wrote beside it."""
    import yaml

    path = root / "recipe.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else None


def check_same_base(recipe, manifest: Manifest, stage: str) -> None:
    """Refuse to use a run's adapter with a recipe whose base is not the one it was trained on."""
    if manifest.base != recipe.base:
        raise StateMismatch(
            f"{stage}: the adapter in {recipe.run_path()} was trained on base {manifest.base!r}, "
            f"but the recipe asks for {recipe.base!r}; train it on that base first or use another run_dir"
        )
