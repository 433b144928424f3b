"""`medzoo.run.open_run`: later stages read the run as trained and refuse edits the adapter would see."""

import json

import pytest

from medzoo.errors import StateMismatch
from medzoo.recipe import load_recipe
from medzoo.run import open_run


def _trained(tmp_path, *sets, **manifest):
    recipe = load_recipe("phantom-tiny", [f"run_dir={tmp_path}", *sets])
    data = {
        "medzoo_version": "0",
        "recipe": recipe.name,
        "config_hash": recipe.config_hash(),
        "base": recipe.base,
        "base_path": "/somewhere",
        "family": "qwen2_5_vl",
        "adapter_method": "lora",
        "trained_recipe": recipe.to_dict(),
        "image_settings": {"min_pixels": 3136, "max_pixels": 12544},
        "adapter_digest": "abc",
        **manifest,
    }
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    return recipe


def test_no_manifest_means_no_trained_run(tmp_path):
    assert open_run(load_recipe("phantom-tiny", [f"run_dir={tmp_path}"]), "bench") is None


@pytest.mark.parametrize(
    "edit,shown",
    [
        ("prompts.train_mode=static", "prompts.train_mode is 'static', trained with 'none'"),
        ("image.max_pixels=20000", "image.max_pixels is 20000, trained with None"),
        ("seed=3", "seed is 3, trained with 0"),  # a zoo base's weights come from its seed
    ],
)
def test_an_edit_the_adapter_would_see_is_refused_naming_the_field(tmp_path, edit, shown):
    _trained(tmp_path)
    edited = load_recipe("phantom-tiny", [f"run_dir={tmp_path}", edit])
    with pytest.raises(StateMismatch, match=rf"^merge: the recipe changed since {tmp_path} was trained \({shown}\)"):
        open_run(edited, "merge")


def test_the_trained_mode_s_prompt_is_an_input_other_modes_prompts_are_not(tmp_path):
    _trained(tmp_path, "prompts.train_mode=static")
    with pytest.raises(StateMismatch, match="prompts.static is 'Be brief.'"):
        open_run(load_recipe("phantom-tiny", [f"run_dir={tmp_path}", "prompts.train_mode=static", "prompts.static=Be brief."]), "bench")  # fmt: skip
    # trained without a system prompt: the static prompt is an evaluation setting (bench's static mode)
    none = tmp_path / "none"
    none.mkdir()
    _trained(none)
    edited = load_recipe("phantom-tiny", [f"run_dir={none}", "prompts.static=Be brief."])
    assert open_run(edited, "bench").changed == ["prompts.static"]


def test_training_only_edits_are_listed_and_the_trained_values_are_read(tmp_path):
    trained_lr = _trained(tmp_path).train.lr
    edited = load_recipe("phantom-tiny", [f"run_dir={tmp_path}", "train.lr=0.5", "bench.limit=3"])
    run = open_run(edited, "card")
    assert run.changed == ["bench.limit", "train.lr"]
    assert run.recipe.train.lr == trained_lr and run.prompt_mode == "none"
    assert run.record()["recipe_changes_since_training"] == ["bench.limit", "train.lr"]


def test_a_processor_that_now_sizes_images_otherwise_is_refused(tmp_path):
    _trained(tmp_path)
    run = open_run(load_recipe("phantom-tiny", [f"run_dir={tmp_path}"]), "serve")
    run.check_image_settings({"min_pixels": 3136, "max_pixels": 12544}, "serve")
    with pytest.raises(StateMismatch, match=r"^serve: the base's processor sizes images as .*'max_pixels': 50176"):
        run.check_image_settings({"min_pixels": 3136, "max_pixels": 50176}, "serve")


def test_an_older_manifest_falls_back_to_recipe_yaml_or_says_to_retrain(tmp_path):
    import yaml

    recipe = _trained(tmp_path, trained_recipe={})
    with pytest.raises(StateMismatch, match="did not record the recipe it trained with; retrain"):
        open_run(recipe, "bench")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict()))
    assert open_run(recipe, "bench").changed == []
