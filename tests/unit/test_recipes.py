"""Every shipped recipe validates; malformed ones fail with the exact one-line error a user sees."""

from pathlib import Path

import pytest

from medzoo.recipe import RecipeError, available_recipes, load_recipe

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))


def test_recipes_are_shipped():
    assert {p.stem for p in SHIPPED} >= {"phantom-tiny", "phantom-tiny-gemma"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_recipe_validates(path):
    recipe = load_recipe(str(path))
    assert recipe.name == path.stem
    assert recipe.description, "every shipped recipe has a one-line description"


def test_found_by_name_and_by_path():
    by_name = load_recipe("phantom-tiny")
    by_path = load_recipe(str(REPO / "recipes" / "phantom-tiny.yaml"))
    assert by_name.to_dict() == by_path.to_dict()
    assert "phantom-tiny" in available_recipes()


def test_defaults_are_filled_in():
    r = load_recipe("phantom-tiny")
    assert r.adapter.method == "lora" and r.adapter.target_modules == "all-linear"
    assert r.train.scheduler == "cosine"
    assert r.prompts.static and "colour" in r.prompts.adaptive


def test_overrides_apply_and_change_the_hash():
    base = load_recipe("phantom-tiny")
    r = load_recipe("phantom-tiny", ["train.lr=2e-4", "adapter.r=8", "data.tasks=[vqa, distance]"])
    assert r.train.lr == pytest.approx(2e-4) and r.adapter.r == 8 and r.data.tasks == ["vqa", "distance"]
    assert r.config_hash() != base.config_hash()


MALFORMED = [
    ("base: zoo:tiny-qwen2.5-vl\nadapter:\n  r: abc\n", "adapter.r: expected a positive integer, got 'abc'"),
    ("base: zoo:tiny-qwen2.5-vl\nadapter:\n  r: 0\n", "adapter.r: expected a positive integer, got 0"),
    ("base: zoo:tiny-qwen2.5-vl\ntrain:\n  lrr: 0.1\n", "train.lrr: unknown key (did you mean 'lr'?)"),
    ("base: zoo:tiny-qwen2.5-vl\nadaptor:\n  r: 4\n", "adaptor: unknown key (did you mean 'adapter'?)"),
    ("description: no base\n", "base: required key is missing (expected a string)"),
    (
        "base: zoo:tiny-qwen25-vl\n",
        "base: unknown zoo model 'zoo:tiny-qwen25-vl' (did you mean 'zoo:tiny-qwen2.5-vl'?); known: zoo:tiny-qwen2-vl, zoo:tiny-qwen2.5-vl, zoo:tiny-qwen3-vl, zoo:tiny-gemma3",
    ),
    (
        "base: zoo:tiny-gemma3\nadapter:\n  method: qlorra\n",
        "adapter.method: expected one of 'lora', 'qlora', got 'qlorra' (did you mean 'qlora'?)",
    ),
    (
        "base: zoo:tiny-gemma3\ndata:\n  tasks: vqa\n",
        "data.tasks: expected a list with items from 'vqa', 'distance', 'angle', 'detection', 'lesion-size', got 'vqa'",
    ),
    (
        "base: zoo:tiny-gemma3\ndata:\n  tasks: [vqa, segmentation]\n",
        "data.tasks[1]: expected one of 'vqa', 'distance', 'angle', 'detection', 'lesion-size', got 'segmentation'",
    ),
    (
        "base: zoo:tiny-gemma3\ntrain:\n  warmup_ratio: 1.5\n",
        "train.warmup_ratio: expected a number between 0 and 1, got 1.5",
    ),
    (
        "base: zoo:tiny-gemma3\ntrain:\n  gradient_checkpointing: maybe\n",
        "train.gradient_checkpointing: expected true or false, got 'maybe'",
    ),
    ("base: zoo:tiny-gemma3\ndata:\n  source: disk\n", "data.path: required when data.source is 'disk'"),
    ("base: zoo:tiny-gemma3\ntrain: 5\n", "train: expected a mapping, got 5"),
    ("- just\n- a list\n", "expected a mapping at the top level, got list"),
    ("base: [unclosed\n", "line 2: not valid YAML"),
    (
        "base: zoo:tiny-gemma3\nprompts:\n  adaptive:\n    colour:\n      prompt: say the colour\n",
        "prompts.adaptive.colour.keywords: expected at least one keyword",
    ),
    (
        "base: zoo:tiny-gemma3\nbench:\n  prompts: [none, fancy]\n",
        "bench.prompts[1]: expected one of 'none', 'static', 'adaptive', got 'fancy'",
    ),
]


@pytest.mark.parametrize("text,expected", MALFORMED, ids=[m[1].split(":")[0] for m in MALFORMED])
def test_malformed_recipe_gives_one_line_error(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as err:
        load_recipe(str(path))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: ")
    assert expected in msg


def test_unknown_recipe_name_suggests():
    with pytest.raises(RecipeError, match=r"phantom-tini: no recipe with this name \(did you mean 'phantom-tiny'\?\)"):
        load_recipe("phantom-tini")
