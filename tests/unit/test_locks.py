"""medzoo.locks: one writer per output folder; the second is told who holds it, a dead holder frees it."""

import multiprocessing as mp
import os
import signal

import pytest

from medzoo.errors import Busy
from medzoo.locks import exclusive


def _hold(folder, ready, release):
    with exclusive(folder, "bench results"):
        ready.set()
        release.wait(60)


def _hold_until_killed(folder, ready):
    import time

    with exclusive(folder, "bench results"):
        ready.set()
        time.sleep(60)


@pytest.fixture
def holder(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(tmp_path / "results", ready, release))
    proc.start()
    assert ready.wait(60)
    yield proc, release
    release.set()
    proc.join(30)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, holder):
    proc, release = holder
    with pytest.raises(Busy, match=rf"results: already being written \(bench results\) by process {proc.pid} "):
        with exclusive(tmp_path / "results", "bench results"):
            pass
    release.set()
    proc.join(30)
    with exclusive(tmp_path / "results", "bench results"):  # free once the holder is done
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    # (not the `holder` fixture: a process killed while waiting on a multiprocessing Event leaves
    # the Event's semaphores for its waiters inconsistent, and setting it would then hang)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_until_killed, args=(tmp_path / "results", ready))
    proc.start()
    assert ready.wait(60)
    with pytest.raises(Busy):
        with exclusive(tmp_path / "results", "bench results"):
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    with exclusive(tmp_path / "results", "bench results"):
        pass


def test_a_waiting_writer_gets_the_folder_after_the_holder(tmp_path, holder):
    import threading

    proc, release = holder
    said = []
    threading.Timer(1.0, release.set).start()
    with exclusive(tmp_path / "results", "a preprocessed dataset", wait=True, log=said.append):
        assert not proc.is_alive() or proc.join(30) is None
    assert said and f"waiting for process {proc.pid}" in said[0]


def test_a_second_training_on_a_held_run_folder_stops_before_loading_anything(tmp_path):
    from medzoo.recipe import load_recipe
    from medzoo.train import train

    run = tmp_path / "run"
    with exclusive(run, "training outputs"):
        with pytest.raises(Busy, match=rf"run: already being written \(training outputs\) by process {os.getpid()} "):
            train(load_recipe("phantom-tiny", [f"run_dir={run}"]))
    assert not run.exists(), "nothing written by the refused run"
