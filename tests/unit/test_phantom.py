"""The phantom is deterministic and its answers are derived from what was drawn."""

import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medzoo.data.phantom import COLOURS, PhantomConfig, make_example, write


def _digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_config_same_bytes(tmp_path):
    cfg = PhantomConfig(tasks=("vqa", "distance", "detection"), n_train=6, n_val=2, n_test=2, seed=3)
    a, b = write(cfg, tmp_path / "a"), write(cfg, tmp_path / "b")
    assert _digest(a) == _digest(b)
    assert any(name.endswith(".arrow") for name in _digest(a))


def test_different_seed_different_images():
    a = make_example(PhantomConfig(seed=0), "train", "vqa", 0)
    b = make_example(PhantomConfig(seed=1), "train", "vqa", 0)
    assert a["image"]["bytes"] != b["image"]["bytes"]


def test_test_split_does_not_depend_on_train_size():
    small = make_example(PhantomConfig(n_train=10), "test", "distance", 4)
    large = make_example(PhantomConfig(n_train=1000), "test", "distance", 4)
    assert small == large


def test_refuses_to_overwrite(tmp_path):
    cfg = PhantomConfig(n_train=1, n_val=1, n_test=1)
    write(cfg, tmp_path / "p")
    with pytest.raises(FileExistsError):
        write(cfg, tmp_path / "p")


def _pixels(ex):
    return np.asarray(Image.open(io.BytesIO(ex["image"]["bytes"])).convert("RGB"))


def test_colour_answer_matches_pixels():
    cfg = PhantomConfig()
    checked = 0
    for i in range(60):
        ex = make_example(cfg, "train", "vqa", i)
        if ex["category"] != "colour":
            continue
        cx, cy, _ = json.loads(ex["metadata"])["findings"][0]
        assert tuple(_pixels(ex)[int(cy), int(cx)]) == COLOURS[ex["answer"]]
        checked += 1
    assert checked >= 5


def test_count_and_presence_answers_match_geometry():
    cfg = PhantomConfig()
    for i in range(80):
        ex = make_example(cfg, "train", "vqa", i)
        n = len(json.loads(ex["metadata"])["findings"])
        if ex["category"] == "counting":
            assert ex["answer"] == str(n)
        if ex["category"] == "presence":
            assert ex["answer"] == ("yes" if n else "no")


def test_distance_is_exact_in_mm():
    ex = make_example(PhantomConfig(tasks=("distance",)), "test", "distance", 0)
    meta = json.loads(ex["metadata"])
    a, b = meta["landmarks"]["A"], meta["landmarks"]["B"]
    assert float(ex["answer"]) == pytest.approx(math.dist(a, b) * meta["pixel_spacing_mm"][0], abs=0.05)
    assert ex["answer"] == f"{float(ex['answer']):.1f}"


def test_box_origin_flips_y():
    up = make_example(PhantomConfig(box_origin="upper-left"), "test", "detection", 2)
    low = make_example(PhantomConfig(box_origin="lower-left"), "test", "detection", 2)
    x1, y1, x2, y2 = json.loads(up["metadata"])["box"]
    lx1, ly1, lx2, ly2 = json.loads(low["metadata"])["box"]
    assert (x1, x2) == (lx1, lx2)
    assert ly1 == pytest.approx(1 - y2) and ly2 == pytest.approx(1 - y1)
    assert 0 <= lx1 < lx2 <= 1 and 0 <= ly1 < ly2 <= 1


def test_lesion_axes_in_mm():
    ex = make_example(PhantomConfig(tasks=("lesion-size",)), "train", "lesion-size", 1)
    meta = json.loads(ex["metadata"])
    assert meta["major_mm"] >= meta["minor_mm"]
    assert ex["answer"] == f"major axis: {meta['major_mm']:.1f} mm, minor axis: {meta['minor_mm']:.1f} mm"


def test_dicom_background_carries_real_spacing():
    ex = make_example(PhantomConfig(tasks=("distance",), background="dicom"), "train", "distance", 0)
    meta = json.loads(ex["metadata"])
    native = meta["native_spacing_mm"]
    assert native in (0.478516, 0.195313, 0.72314049586777, 0.859375)
    assert meta["pixel_spacing_mm"][0] > native  # resized down to 128 px, so each pixel covers more


def test_llava_export(tmp_path):
    out = write(PhantomConfig(tasks=("vqa",), n_train=3, n_val=1, n_test=1), tmp_path / "l", fmt="llava")
    records = json.loads((out / "train.json").read_text())
    assert len(records) == 3
    r = records[0]
    assert r["conversations"][0]["value"].startswith("<image>\n")
    assert (out / r["image"]).exists()


def test_cli_writes_dataset(tmp_path):
    from conftest import run_medzoo
    from datasets import load_from_disk

    out = tmp_path / "ph"
    proc = run_medzoo(
        "data", "phantom", "--task", "vqa,angle", "--n", "4", "--n-val", "1", "--n-test", "2", "--out", str(out)
    )
    assert "wrote 14 examples" in proc.stdout
    dd = load_from_disk(str(out))
    assert {k: len(v) for k, v in dd.items()} == {"train": 8, "validation": 2, "test": 4}
    assert set(dd["train"]["task"]) == {"vqa", "angle"}
