"""The preprocessed-data cache: reused when nothing changed, rebuilt when something did, safe under races."""

from medzoo.recipe import load_recipe


def _context(recipe):
    from medzoo.train import TrainContext

    return TrainContext.for_recipe(recipe)


def test_second_run_hits_and_changed_config_misses(tmp_path, monkeypatch):
    from medzoo.train import prepare_split

    monkeypatch.setenv("MEDZOO_HOME", str(tmp_path))
    from medzoo import zoo

    zoo.build("tiny-qwen2.5-vl")  # (into tmp home; deterministic)
    recipe = load_recipe("phantom-tiny", ["data.n_train=16", "data.n_val=4"])
    ctx = _context(recipe)
    ds1, hit1 = prepare_split(ctx, recipe.data, "train", None)
    ds2, hit2 = prepare_split(ctx, recipe.data, "train", None)
    assert (hit1, hit2) == (False, True)
    assert ds1[0]["input_ids"].tolist() == ds2[0]["input_ids"].tolist()
    ds3, hit3 = prepare_split(ctx, recipe.data, "train", 8)  # a limit changes the contents
    assert not hit3 and len(ds3) == 8
    ctx_static = _context(load_recipe("phantom-tiny", ["data.n_train=16", "data.n_val=4", "prompts.train_mode=static"]))
    _, hit4 = prepare_split(ctx_static, recipe.data, "train", None)  # so does the prompt mode
    assert not hit4
    entries = [p for p in (tmp_path / "cache" / "preprocessed").iterdir() if p.name != ".locks"]
    assert len(entries) == 3 and not [p for p in entries if p.name.endswith(".tmp")]
