"""medzoo.engines: one interface (load, generate(requests) -> texts, close) over every engine."""

import pytest

from medzoo.engines.base import Request, requests_from


def _prepared(recipe_name: str, n: int):
    from medzoo.data.sources import first_rows
    from medzoo.inference import prepare
    from medzoo.models.loading import recipe_base
    from medzoo.recipe import load_recipe, prompt_settings

    recipe = load_recipe(recipe_name, ["data.n_train=8", "data.n_val=4"])
    base = recipe_base(recipe)
    _, rows = first_rows(recipe.data, "test", n)
    prepared = prepare(rows, base.processor, base.family, prompt_settings(recipe), "none", base.image_settings)
    return base, prepared


def test_requests_carry_the_prompt_its_messages_and_images():
    _, prepared = _prepared("phantom-tiny", 3)
    requests = requests_from(prepared, adapter="tuned")
    assert [r.prompt for r in requests] == prepared.prompts
    assert [r.messages for r in requests] == prepared.messages and all(r.adapter == "tuned" for r in requests)


def test_hf_engine_answers_like_the_batched_generate_function():
    from medzoo.engines import hf_engine
    from medzoo.models.loading import load_model, stop_token_ids

    base, prepared = _prepared("phantom-tiny", 3)
    stops = stop_token_ids(base.processor, base.family)
    engine = hf_engine.HFEngine.load(base.path, base.processor, stops)
    texts = engine.generate(requests_from(prepared), 6)
    engine.close()
    direct = hf_engine.generate(load_model(base.path), base.processor, prepared.prompts, prepared.images, 6, stops)
    assert texts == direct and len(texts) == 3
    with pytest.raises(ValueError, match="one model"):
        hf_engine.HFEngine(None, base.processor, stops).generate([Request("p", [], adapter="tuned")], 1)
