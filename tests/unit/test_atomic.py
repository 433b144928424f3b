"""medzoo.atomic: a folder is replaced in one step, and a failed write leaves the old one."""

import sys
import threading

import pytest

from medzoo.atomic import replace_dir, swap_into_place


def test_replace_dir_swaps_in_the_new_folder_and_leaves_no_temp(tmp_path):
    final = tmp_path / "adapter"
    with replace_dir(final) as tmp:
        (tmp / "weights").write_text("v1")
    with replace_dir(final) as tmp:
        (tmp / "weights").write_text("v2")
    assert (final / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"], "no temp or old folders left"


def test_a_failed_write_keeps_the_old_folder(tmp_path):
    final = tmp_path / "merged"
    with replace_dir(final) as tmp:
        (tmp / "model").write_text("old")
    with pytest.raises(RuntimeError), replace_dir(final) as tmp:
        (tmp / "model").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (final / "model").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_a_reader_never_finds_the_folder_missing(tmp_path):
    """The old code deleted the folder before renaming the new one in; a reader polling meanwhile
    saw nothing. The swap leaves no such moment."""
    final = tmp_path / "export"
    final.mkdir()
    (final / "f").write_text("0")
    missing, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            if not final.exists():
                missing.append(1)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often enough to land in a gap (delete-then-rename: ~20 of 200)
    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(200):
            new = tmp_path / f".new-{i}"
            new.mkdir()
            (new / "f").write_text(str(i))
            swap_into_place(new, final)
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(interval)
    assert not missing and (final / "f").read_text() == "199"
