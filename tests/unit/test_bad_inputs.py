"""Bad or awkward input never ends in a result that looks complete and is wrong, or in a traceback:
each case here failed on the code before the bad-input sweep was fixed."""

import json

import pytest
from conftest import run_medzoo

from medzoo.errors import InvalidValue, StateMismatch
from medzoo.recipe import RecipeError, load_recipe


def _conversations(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(records))
    return folder


def _turns(question="Colour?", answer="red"):
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


# ---------------------------------------------------------------- recipes


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lr=.inf", "train.lr: expected a positive number, got inf"),
        ("train.lr=.nan", "train.lr: expected a positive number, got nan"),
        ("seed=-1", "seed: expected an integer >= 0, got -1"),
        ("train.seed=-3", "train.seed: expected an integer >= 0, got -3"),
        ("name=../elsewhere", "name: expected letters, digits and . _ + - (no path), got '../elsewhere'"),
        ("train.lr=[1,", "--set train.lr=[1,: the value is not valid YAML"),
    ],
)
def test_recipe_values_that_would_go_wrong_later_are_refused_now(override, expected):
    with pytest.raises(RecipeError) as e:
        load_recipe("phantom-tiny", [override])
    assert expected in str(e.value)


def test_a_malformed_extends_parent_is_one_line_and_recipes_list_survives(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "parent.yaml").write_text("base: [unclosed\n")
    (recipes / "child.yaml").write_text("extends: parent\n")
    with pytest.raises(RecipeError, match=r"parent.yaml: line \d+: not valid YAML"):
        load_recipe(str(recipes / "child.yaml"))
    listing = run_medzoo("recipes", "list", cwd=tmp_path)
    assert "child" in listing.stdout and "INVALID: " in listing.stdout and "phantom-tiny " in listing.stdout


def test_a_recipe_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("description: Röntgen\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=r"latin.yaml: not UTF-8 text"):
        load_recipe(str(path))


# ---------------------------------------------------------------- annotation files


def test_non_object_records_and_turns_are_one_line(tmp_path):
    from medzoo.data.records import AnnotationError, conversation_rows, table_rows

    bad = tmp_path / "a.json"
    bad.write_text(json.dumps([{"image": "x.png", "conversations": _turns()}, "just a string"]))
    with pytest.raises(AnnotationError, match=r"a.json: record 1: expected a JSON object, got str"):
        conversation_rows(bad)
    bad.write_text(json.dumps([{"image": "x.png", "conversations": ["human: hi", "gpt: hello"]}]))
    with pytest.raises(AnnotationError, match=r"record 0: expected 'conversations' with a human and a gpt turn"):
        conversation_rows(bad)
    bad.write_text(json.dumps([[1, 2]]))
    with pytest.raises(AnnotationError, match=r"record 0: expected a JSON object, got list"):
        table_rows(bad)


def test_an_annotation_file_that_is_not_utf8_names_the_file(tmp_path):
    from medzoo.data.records import AnnotationError, conversation_rows

    bad = tmp_path / "b.json"
    bad.write_bytes(b'[{"image": "x.png", "conversations": []}] \xff')
    with pytest.raises(AnnotationError, match=r"b.json: not UTF-8 text \(invalid start byte at byte \d+\)"):
        conversation_rows(bad)


def test_a_null_answer_is_empty_and_dropped_never_the_text_none(tmp_path):
    from medzoo.data.records import conversation_rows, table_rows

    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"image": "x.png", "conversations": _turns(answer=None)}]))
    assert conversation_rows(path)[0]["answer"] == ""
    path.write_text(json.dumps([{"image": "x.png", "question": "Colour?", "answer": None}]))
    assert table_rows(path)[0]["answer"] == ""


def test_duplicate_example_ids_are_an_error_naming_them(tmp_path):
    from PIL import Image

    from medzoo.data.sources import load_splits

    folder = tmp_path / "data"
    folder.mkdir()
    Image.new("RGB", (16, 16), "red").save(folder / "a.png")
    records = [{"id": i, "image": "a.png", "conversations": _turns()} for i in ("x1", "x2", "x1", "x3", "x3")]
    _conversations(folder, records)
    recipe = load_recipe("phantom-tiny", ["data.source=conversations", f"data.path={folder}"])
    with pytest.raises(InvalidValue) as e:
        load_splits(recipe.data)
    assert "2 duplicate example id(s) ('train-x1-0' x2, 'train-x3-0' x2)" in str(e.value)


# ---------------------------------------------------------------- images


def test_16_bit_grey_keeps_its_contrast_instead_of_saturating_to_white(tmp_path):
    import numpy as np
    from PIL import Image

    from medzoo.data.images import as_rgb

    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096) + 100  # a 12-bit X-ray in 16 bits
    path = tmp_path / "xray16.png"
    Image.fromarray(ramp).save(path)
    plain = np.asarray(Image.open(path).convert("RGB"))
    assert (plain == 255).mean() > 0.9, "PIL's own conversion saturates (what medzoo used to do)"
    rgb = np.asarray(as_rgb(Image.open(path)))
    assert rgb.shape == (64, 64, 3) and rgb.min() == 0 and rgb.max() == 255
    assert len(np.unique(rgb[..., 0])) > 200, "the grey levels survive"
    assert (rgb[..., 0] == rgb[..., 1]).all()


def test_transparent_pixels_become_black_not_the_colour_they_hide(tmp_path):
    import numpy as np
    from PIL import Image

    from medzoo.data.images import as_rgb

    rgba = Image.new("RGBA", (8, 8), (255, 255, 255, 0))  # white, fully transparent
    assert np.asarray(rgba.convert("RGB")).max() == 255
    assert np.asarray(as_rgb(rgba)).max() == 0


def test_a_measurement_example_without_pixel_spacing_is_refused_not_one_mm():
    from medzoo.prompts import user_text

    example = {"id": "plain-png-7", "task": "distance", "question": "Distance?", "metadata": json.dumps({})}
    with pytest.raises(InvalidValue, match=r"example 'plain-png-7': a distance task needs the image's pixel spacing"):
        user_text(example, (64, 64))
    example["metadata"] = json.dumps({"pixel_spacing_mm": [0.5, 0.25], "image_size": [64, 64]})
    assert "one pixel is 0.2500 mm wide and 0.5000 mm high" in user_text(example, (64, 64))
    vqa = {"id": "v", "task": "vqa", "question": "Colour?", "metadata": "{}"}
    assert user_text(vqa, (64, 64)) == "Colour?"


# ---------------------------------------------------------------- training state


def test_resume_with_a_changed_recipe_refuses_naming_the_fields(tmp_path):
    from medzoo.train.recipe_guard import check_resume, record_started

    run = tmp_path / "run"
    run.mkdir()
    started = load_recipe("phantom-tiny", [f"run_dir={run}"])
    record_started(run, started)
    check_resume(run, load_recipe("phantom-tiny", [f"run_dir={run}", "bench.limit=3"]), False)  # not training
    lr = load_recipe("phantom-tiny", [f"run_dir={run}", "train.lr=5e-4"])
    with pytest.raises(StateMismatch) as e:
        check_resume(run, lr, False)
    assert "the recipe changed since" in str(e.value) and "train.lr 0.001 -> 0.0005" in str(e.value)
    assert "--accept-recipe-changes" in str(e.value)
    check_resume(run, lr, True)  # the documented override
    r = load_recipe("phantom-tiny", [f"run_dir={run}", "adapter.r=32"])
    with pytest.raises(StateMismatch, match=r"was started with another adapter.r \(adapter.r 16 -> 32\)"):
        check_resume(run, r, True)  # the checkpoint's shapes: never


def test_train_resume_with_a_changed_recipe_is_one_line_before_any_model_loads(tmp_path):
    from medzoo.train.recipe_guard import record_started

    run = tmp_path / "run"
    run.mkdir()
    record_started(run, load_recipe("phantom-tiny", [f"run_dir={run}"]))
    proc = run_medzoo(
        "train",
        "phantom-tiny",
        "--set",
        f"run_dir={run}",
        "--set",
        "train.lr=5e-4",
        "--set",
        "train.max_steps=2",
        "--resume",
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: train --resume: the recipe changed since")


def test_resume_skips_a_checkpoint_cut_short_while_saving(tmp_path):
    from medzoo.train.trainer import CHECKPOINT_COMPLETE, latest_checkpoint

    folder = tmp_path / "checkpoints" / "00-main"
    for step in (10, 20, 30):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
    (folder / "checkpoint-10" / CHECKPOINT_COMPLETE).write_text("10\n")
    (folder / "checkpoint-20" / CHECKPOINT_COMPLETE).write_text("20\n")
    (folder / "checkpoint-30" / "adapter_model.safetensors").write_bytes(b"\0" * 10)  # killed mid-save
    said = []
    assert latest_checkpoint(folder, said.append) == str(folder / "checkpoint-20")
    assert said == [f"resume: skipping incomplete checkpoint(s) checkpoint-30 in {folder} (cut short while saving)"]
    (folder / "checkpoint-10" / CHECKPOINT_COMPLETE).unlink()
    (folder / "checkpoint-20" / CHECKPOINT_COMPLETE).unlink()
    assert latest_checkpoint(folder) is None, "nothing complete: start the stage over"


def test_an_empty_split_is_an_error_every_time_and_never_cached(tmp_path):
    from PIL import Image

    from medzoo.train import TrainContext, prepare_split

    folder = tmp_path / "data"
    folder.mkdir()
    Image.new("RGB", (16, 16), "red").save(folder / "a.png")
    records = [{"id": i, "image": "a.png", "conversations": _turns(answer="nan")} for i in range(4)]
    _conversations(folder, records)
    recipe = load_recipe("phantom-tiny", ["data.source=conversations", f"data.path={folder}"])
    ctx = TrainContext.for_recipe(recipe)
    for _ in range(2):  # the second time used to hit a cached empty split ("list index out of range")
        with pytest.raises(InvalidValue, match=r"no usable examples left in split 'train' .*empty_answer: 4"):
            prepare_split(ctx, recipe.data, "train", None)


# ---------------------------------------------------------------- outputs


def test_zoo_build_into_a_folder_that_holds_something_else_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    proc = run_medzoo("zoo", "build", "tiny-qwen2-vl", "--out", str(tmp_path), check=False)
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == f"error: {tmp_path}: exists and is not a model folder; choose another --out or remove it"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--n", "-1"], "phantom: n_train (--n) must be a positive integer, got -1"),
        (["--n-test", "0"], "phantom: n_test must be a positive integer, got 0"),
        (["--seed", "-2"], "phantom: seed must be an integer >= 0, got -2"),
    ],
)
def test_phantom_sizes_that_would_write_an_unloadable_set_are_refused(tmp_path, args, expected):
    proc = run_medzoo("data", "phantom", *args, "--out", str(tmp_path / "p"), check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == f"error: {expected}"
    assert not (tmp_path / "p").exists()


def test_a_failed_export_leaves_no_partial_folder_behind(tmp_path):
    run = tmp_path / "run"
    proc = run_medzoo("export", "phantom-tiny", "--gguf", "--set", f"run_dir={run}", check=False)
    assert proc.returncode == 1 and "no trained adapter" in proc.stderr
    assert not (run / "export.partial").exists() and not (run / "export").exists()


def test_an_annotation_file_without_records_is_one_line(tmp_path):
    from medzoo.data.sources import load_splits

    folder = _conversations(tmp_path / "data", [])
    recipe = load_recipe("phantom-tiny", ["data.source=conversations", f"data.path={folder}"])
    with pytest.raises(InvalidValue, match=r"data.path: .*data: the annotation file\(s\) hold no examples"):
        load_splits(recipe.data)


def test_a_garbage_adapter_config_is_one_line(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{not json")
    proc = run_medzoo("bench", "phantom-tiny", "--adapter", str(adapter), "--limit", "1", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"error: {adapter / 'adapter_config.json'}: not valid JSON" in proc.stderr
    (adapter / "adapter_config.json").write_text("[1, 2]")
    proc = run_medzoo("bench", "phantom-tiny", "--adapter", str(adapter), "--limit", "1", check=False)
    assert "not a peft adapter config (expected a JSON object with 'peft_type')" in proc.stderr


def _pydicom_file(name):
    from pydicom.data import get_testdata_file

    return get_testdata_file(name, download=False)


def test_a_multi_frame_dicom_gives_one_frame_and_no_invented_spacing():
    import numpy as np
    import pydicom

    from medzoo.data.medical import MedicalImageError, load_medical_image

    path = _pydicom_file("emri_small.dcm")  # 10-frame MR without a top-level PixelSpacing
    meta = {}
    image = load_medical_image(path, meta)
    assert image.size == (64, 64) and image.mode == "RGB"
    assert meta["frame"] == 5 and meta["spacing_source"] == "unknown" and "pixel_spacing_mm" not in meta
    frame = pydicom.dcmread(path).pixel_array[5].astype(np.float32)
    lo, hi = np.percentile(frame, [1, 99])
    expected = (np.clip((frame - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)
    assert (np.asarray(image)[..., 0] == expected).all(), "the chosen frame, windowed as recorded"
    meta = {"frame": 2}
    load_medical_image(path, meta)
    assert meta["frame"] == 2
    with pytest.raises(MedicalImageError, match=r"emri_small.dcm: frame 10 outside the file's 10 frame\(s\)"):
        load_medical_image(path, {"frame": 10})


# ---------------------------------------------------------------- round two of the sweep


def test_a_local_base_without_config_or_a_missing_one_is_one_line_naming_it(tmp_path, monkeypatch):
    from medzoo.errors import MissingState
    from medzoo.models.loading import model_type_of
    from medzoo.models.sizing import base_config

    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingState, match=r"empty: the folder has no config.json"):
        base_config(str(tmp_path / "empty"))  # train --dry-run's first read: was transformers' ValueError
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(MissingState, match=r"^base: models/mine: no such folder"):
        model_type_of("models/mine")  # ./models exists: a missing local folder, not a Hub id to download


def test_table_cells_that_are_not_numbers_or_json_name_the_record_and_column(tmp_path):
    from medzoo.data.records import AnnotationError, table_rows

    csv = tmp_path / "t.csv"
    csv.write_text("image,question,answer,window_center,window_width\na.png,Q?,A,wide,400\n")
    with pytest.raises(AnnotationError, match=r"t.csv: record 0: window_center: expected a number, got 'wide'"):
        table_rows(csv)
    csv.write_text('image,question,answer,metadata\na.png,Q?,A,"{not json"\n')
    with pytest.raises(AnnotationError, match=r"t.csv: record 0: metadata: expected a JSON object, got '\{not json'"):
        table_rows(csv)


def test_a_train_split_too_small_to_carve_a_validation_split_says_so():
    from datasets import Dataset

    from medzoo.train.data import _carved_validation

    with pytest.raises(InvalidValue, match=r"no validation split, and its train split has 1 example\(s\): too few"):
        _carved_validation(Dataset.from_dict({"id": ["a"]}), seed=0)
    assert len(_carved_validation(Dataset.from_dict({"id": list("abcdefghijkl")}), seed=0)) == 2  # ceil(10%)


def test_extends_of_a_missing_recipe_names_the_file_and_the_field(tmp_path):
    (tmp_path / "child.yaml").write_text("extends: no-such-parent\n")
    with pytest.raises(RecipeError, match=r"child.yaml: extends: no-such-parent: no recipe with this name"):
        load_recipe(str(tmp_path / "child.yaml"))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.pixel_spacing_mm=0", "data.pixel_spacing_mm: expected a positive number (or null), got 0"),
        ("image.min_pixels=50000", "image.min_pixels: expected at most image.max_pixels (12544), got 50000"),
    ],
)
def test_sizes_that_would_silently_mislead_are_refused_with_the_rule(override, expected):
    with pytest.raises(RecipeError, match=re_escape(expected)):
        load_recipe("phantom-tiny", ["image.max_pixels=12544", override])


def re_escape(text):
    import re

    return re.escape(text)


def test_colour_dicom_stays_colour_and_a_zero_spacing_is_no_spacing(tmp_path):
    import numpy as np
    import pydicom

    from medzoo.data.medical import load_medical_image

    meta = {}
    rgb = np.asarray(load_medical_image(_pydicom_file("SC_rgb.dcm"), meta))
    assert (rgb == pydicom.dcmread(_pydicom_file("SC_rgb.dcm")).pixel_array).all() and meta[
        "windowing"
    ] == "none (colour)"
    meta = {}
    palette = np.asarray(load_medical_image(_pydicom_file("OBXXXX1A.dcm"), meta))
    assert meta["photometric"] == "PALETTE COLOR" and (palette[..., 0] != palette[..., 2]).any(), "not windowed as grey"
    ds = pydicom.dcmread(_pydicom_file("SC_rgb.dcm"))
    ds.PixelSpacing = [0, 0]
    ds.save_as(tmp_path / "zero.dcm")
    meta = {}
    load_medical_image(str(tmp_path / "zero.dcm"), meta)
    assert "pixel_spacing_mm" not in meta and "is not a positive spacing" in meta["spacing_source"]


def _table(tmp_path, rows):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_recipe(
        "phantom-tiny", [f"run_dir={tmp_path / 'run'}", "data.source=table", f"data.path={tmp_path / 'data'}"]
    )


def test_check_fails_one_line_each_on_what_train_or_bench_would_refuse_or_mishandle(tmp_path):
    import shutil

    from PIL import Image

    from medzoo.check import check

    Image.new("RGB", (32, 32), "red").save(tmp_path / "a.png")
    shutil.copy(_pydicom_file("emri_small.dcm"), tmp_path / "mr.dcm")
    rows = [
        {"id": "q1", "image": str(tmp_path / "a.png"), "question": "Colour?", "answer": ""},
        {"id": "q2", "image": str(tmp_path / "a.png"), "question": "Length?", "answer": "12 mm", "task": "distance"},
        {"id": "q3", "image": str(tmp_path / "mr.dcm"), "question": "Colour?", "answer": "nan", "frame": 99},
    ]
    report = check(_table(tmp_path, rows), render_sample=False, log=lambda *_: None)
    assert not report.ok
    assert "split 'train': all 3 answers are empty" not in " ".join(report.problems)  # q2 has one
    assert any("1 measurement example(s) have no pixel spacing (e.g. 'q2')" in p for p in report.problems)
    assert [r for _, i, r in report.unreadable if i == "q3"] == [
        f"{tmp_path / 'mr.dcm'}: frame 99 outside the file's 10 frame(s) (frames count from 0)"
    ], "the DICOM's own reason, not PIL's 'cannot identify image file'"
    rows[1]["answer"] = "nan"
    report = check(_table(tmp_path, rows), render_sample=False, log=lambda *_: None)
    assert any("split 'train': all 3 answers are empty or in data.drop_answers" in p for p in report.problems)


def test_generate_on_an_example_whose_image_is_missing_says_so_in_one_line(tmp_path):
    from medzoo.inference import generate_for_recipe

    recipe = _table(tmp_path, [{"id": "gone", "image": str(tmp_path / "nope.png"), "question": "Q?", "answer": "A"}])
    with pytest.raises(
        InvalidValue, match=r"--index 0: example 'gone' of split 'train' is unusable \(unreadable_image\)"
    ):
        generate_for_recipe(recipe, split="train", index=0)


def test_bench_refuses_an_adapter_with_non_finite_weights(tmp_path):
    import torch
    from safetensors.torch import save_file

    from medzoo.adapters import check_adapter_finite

    save_file({"lora_A.weight": torch.tensor([[1.0, float("nan")]])}, tmp_path / "adapter_model.safetensors")
    with pytest.raises(
        InvalidValue, match=r"adapter weight lora_A.weight holds NaN or inf \(the training run diverged\)"
    ):
        check_adapter_finite(tmp_path)


def test_a_checkpoint_with_non_finite_weights_is_never_marked_complete(tmp_path):
    from types import SimpleNamespace

    import torch

    from medzoo.train.trainer import CHECKPOINT_COMPLETE, checkpoint_marker_callback

    mark = checkpoint_marker_callback()
    args, state = SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=4, is_world_process_zero=True)
    (tmp_path / "checkpoint-4").mkdir()
    model = torch.nn.Linear(2, 2)
    mark.on_save(args, state, None, model=model)
    assert (tmp_path / "checkpoint-4" / CHECKPOINT_COMPLETE).exists()
    (tmp_path / "checkpoint-4" / CHECKPOINT_COMPLETE).unlink()
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    mark.on_save(args, state, None, model=model)
    assert not (tmp_path / "checkpoint-4" / CHECKPOINT_COMPLETE).exists(), "--resume must not pick it up"


def test_serve_before_training_says_it_serves_the_base_model_only(tmp_path):
    proc = run_medzoo("serve", "phantom-tiny", "--set", f"run_dir={tmp_path}", "--print-only")
    assert "no adapter trained yet for phantom-tiny" in proc.stdout and "serving the base model only" in proc.stdout


def test_a_one_line_error_keeps_its_cause_for_debug(tmp_path):
    import yaml

    (tmp_path / "bad.yaml").write_text("base: [unclosed\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(str(tmp_path / "bad.yaml"))
    assert isinstance(e.value.__cause__, yaml.YAMLError), "--debug shows what the parser said"
