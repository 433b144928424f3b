"""End to end (slow): The preprocessed-data cache: reused when nothing changed, rebuilt when something did, safe under races."""

import multiprocessing as mp

import pytest

from medzoo.recipe import load_recipe

pytestmark = pytest.mark.slow


def _prepare(home, limit, queue):
    import os

    os.environ["MEDZOO_HOME"] = home
    from medzoo.train import TrainContext, prepare_split

    recipe = load_recipe("phantom-tiny", ["data.n_train=16", "data.n_val=4"])
    ds, hit = prepare_split(TrainContext.for_recipe(recipe), recipe.data, "train", limit)
    queue.put((len(ds), hit))


def test_two_processes_building_the_same_cache(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    home = str(tmp_path)
    # Build the zoo model and phantom first so the race is on the preprocessed cache itself.
    p0 = ctx.Process(target=_prepare, args=(home, 4, queue))
    p0.start()
    p0.join()
    assert queue.get() == (4, False)
    procs = [ctx.Process(target=_prepare, args=(home, None, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0
    results = [queue.get() for _ in procs]
    assert all(n == 16 for n, _ in results)
    # One builds the entry while holding its lock; the other waits and reads it (medzoo.locks).
    assert sorted(hit for _, hit in results) == [False, True]
    entries = [p for p in (tmp_path / "cache" / "preprocessed").iterdir() if p.name != ".locks"]
    assert len(entries) == 2 and not [p for p in entries if p.name.startswith(".")], entries
    # A third process reads the finished entry.
    p3 = ctx.Process(target=_prepare, args=(home, None, queue))
    p3.start()
    p3.join()
    assert queue.get() == (16, True)
