"""Commands without a RECIPE argument: medzoo.yaml, then the only ./recipes file, then the most
recently trained run, then the embedded default; several own recipes and no run is an error."""

import json
import os
import time

import pytest
from conftest import REPO, run_medzoo

from medzoo.errors import InvalidValue
from medzoo.recipe import DEFAULT_RECIPE, available_recipes, choose_recipe, load_recipe


def _recipe(folder, name, base="zoo:tiny-qwen2-vl"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(f"extends: phantom-tiny\nbase: {base}\ndescription: {name}\n")
    return path


def _trained_run(folder, name, age_s=0.0):
    run = folder / "runs" / name
    run.mkdir(parents=True)
    manifest = run / "manifest.json"
    manifest.write_text(json.dumps({"recipe": name}))
    stamp = time.time() - age_s
    os.utime(manifest, (stamp, stamp))
    return run


def test_a_fresh_folder_gets_the_embedded_default(tmp_path):
    choice = choose_recipe(tmp_path)
    assert choice.recipe == DEFAULT_RECIPE == "phantom-tiny"
    assert "embedded default" in choice.reason


def test_a_fresh_checkout_gets_the_embedded_default():
    """In the medzoo checkout ./recipes is the shipped zoo, not the user's own choice."""
    if (REPO / "medzoo.yaml").exists() or any((REPO / "runs").glob("*/manifest.json")):
        pytest.skip("this checkout is not fresh (it has a medzoo.yaml or a trained run)")
    assert choose_recipe(REPO).recipe == "phantom-tiny"


def test_medzoo_yaml_names_the_recipe_first(tmp_path):
    _recipe(tmp_path / "recipes", "only-one")
    _trained_run(tmp_path, "phantom-tiny-gemma")
    (tmp_path / "medzoo.yaml").write_text("recipe: phantom-tiny-gemma\n")
    choice = choose_recipe(tmp_path)
    assert (choice.recipe, choice.reason) == ("phantom-tiny-gemma", "named in medzoo.yaml")
    (tmp_path / "medzoo.yaml").write_text("recipe: recipes/only-one.yaml\n")  # a path: relative to the file
    assert choose_recipe(tmp_path).recipe == str(tmp_path / "recipes" / "only-one.yaml")


def test_a_bad_medzoo_yaml_is_one_line_naming_the_field(tmp_path):
    (tmp_path / "medzoo.yaml").write_text("recipes: phantom-tiny\n")
    with pytest.raises(InvalidValue, match=r"medzoo.yaml: recipe: expected a recipe name or path, got None"):
        choose_recipe(tmp_path)
    (tmp_path / "medzoo.yaml").write_text("recipe: [unclosed\n")
    with pytest.raises(InvalidValue, match=r"medzoo.yaml: not valid YAML"):
        choose_recipe(tmp_path)


def test_the_only_recipe_in_recipes_comes_before_trained_runs(tmp_path):
    path = _recipe(tmp_path / "recipes", "my-study")
    _trained_run(tmp_path, "phantom-tiny")
    choice = choose_recipe(tmp_path)
    assert (choice.recipe, choice.reason) == (str(path), "the only recipe in ./recipes")


def test_the_most_recently_trained_run(tmp_path):
    _trained_run(tmp_path, "phantom-tiny", age_s=3600)
    _trained_run(tmp_path, "phantom-tiny-gemma", age_s=60)
    (tmp_path / "runs" / "not-trained" / "bench").mkdir(parents=True)  # bench results alone are no run
    choice = choose_recipe(tmp_path)
    assert choice.recipe == "phantom-tiny-gemma"
    assert choice.reason.startswith("the most recently trained run, ") and "phantom-tiny-gemma" in choice.reason


def test_a_run_of_a_recipe_that_moved_uses_the_recipe_it_saved(tmp_path):
    run = _trained_run(tmp_path, "gone-study")
    (run / "recipe.yaml").write_text("name: gone-study\nbase: zoo:tiny-qwen2-vl\n")
    assert choose_recipe(tmp_path).recipe == str(run / "recipe.yaml")


def test_several_own_recipes_and_no_run_is_an_error_listing_them(tmp_path):
    _recipe(tmp_path / "recipes", "study-a")
    _recipe(tmp_path / "recipes", "study-b")
    with pytest.raises(InvalidValue) as e:
        choose_recipe(tmp_path)
    assert "./recipes holds 2 recipes (study-a, study-b)" in str(e.value) and "medzoo.yaml" in str(e.value)
    _trained_run(tmp_path, "phantom-tiny")  # a trained run settles it
    assert choose_recipe(tmp_path).recipe == "phantom-tiny"


def test_shipped_recipes_are_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "phantom-tiny" in available_recipes()
    assert load_recipe("phantom-tiny").name == "phantom-tiny"


def test_commands_say_which_recipe_they_chose(tmp_path):
    (tmp_path / "medzoo.yaml").write_text("recipe: phantom-tiny-gemma\n")
    proc = run_medzoo("train", "--dry-run", "--set", "data.n_train=nope", cwd=tmp_path, check=False)
    assert proc.stderr.splitlines()[0] == "recipe: phantom-tiny-gemma (named in medzoo.yaml)"
    assert proc.returncode == 1 and "data.n_train" in proc.stderr.splitlines()[1]
    _recipe(tmp_path / "recipes", "a")
    _recipe(tmp_path / "recipes", "b")
    (tmp_path / "medzoo.yaml").unlink()
    proc = run_medzoo("bench", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: no recipe given and ./recipes holds 2 recipes (a, b); "
        "name one on the command line or set `recipe:` in medzoo.yaml"
    )
