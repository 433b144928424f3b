"""medzoo.tasks: one record per task, and every stage that needs a task reads it from there."""

import pytest

from medzoo.tasks import TASKS


def test_every_task_has_a_phantom_generator_and_a_headline_metric():
    from medzoo.bench import PRIMARY_METRIC
    from medzoo.card import INDEX_METRICS
    from medzoo.data import phantom

    assert set(phantom._MAKERS) == set(TASKS) == set(PRIMARY_METRIC) == set(INDEX_METRICS)
    for task in TASKS.values():
        assert task.kind in ("text", "measurement", "box")
        assert (task.values > 0) == (task.kind == "measurement"), task.name
        assert (task.answer_format is None) == (task.kind == "text"), task.name


def test_a_measurement_prompt_asks_for_the_tasks_format():
    from medzoo.prompts import FORMAT_REQUIREMENTS

    assert FORMAT_REQUIREMENTS["lesion-size"] == TASKS["lesion-size"].answer_format
    assert "vqa" not in FORMAT_REQUIREMENTS


def test_scores_follow_the_task_record():
    from medzoo.bench import score_example

    _, lesion = score_example(
        "lesion-size", "major axis: 10.0 mm, minor axis: 5.0 mm", "major axis: 10.0 mm, minor axis: 4.0 mm"
    )
    assert len(lesion["rel_error"]) == TASKS["lesion-size"].values == 2
    assert lesion["rel_error"] == [0.0, pytest.approx(0.25)]


def test_a_recipe_with_an_unknown_task_names_the_field(tmp_path):
    from medzoo.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=r"data\.tasks.*'segmentation'"):
        load_recipe("phantom-tiny", ["data.tasks=[vqa,segmentation]"])
