"""The seed workflows as recipes: real data formats, DICOM/NIfTI spacing, `medzoo check`, offline twins."""

from __future__ import annotations

import json

import pytest
from conftest import SEED_TWINS, run_medzoo

from medzoo.recipe import available_recipes, load_recipe

SEEDS = [
    "medgemma-kvasir-vqa",
    "medvision-qwen25vl-distance",
    "medvision-qwen25vl-detection",
    "medvision-qwen25vl-lesion-size",
    "medvision-qwen25vl-mixed",
    "qwen3vl-flare25",
    "qwen2vl-surgical-curriculum",
]


def test_every_seed_recipe_and_twin_is_shipped_and_valid():
    found = available_recipes()
    for name in SEEDS + SEED_TWINS:
        assert name in found
        r = load_recipe(name)
        assert r.description
    flare = load_recipe("qwen3vl-flare25")
    assert (flare.train.lr, flare.train.scheduler, flare.train.warmup_ratio) == (1e-5, "cosine", 0.03)
    assert flare.train.batch_size * flare.train.grad_accum == 16
    surgical = load_recipe("qwen2vl-surgical-curriculum")
    assert (surgical.adapter.r, surgical.adapter.alpha, surgical.adapter.dropout, surgical.train.lr) == (
        32,
        64,
        0.05,
        5e-6,
    )
    assert [s.stage_filter for s in surgical.train.stages] == ["1", "2", "3"]
    kvasir_twin = load_recipe("medgemma-kvasir-vqa-tiny")  # extends: the seed, then states what differs
    assert kvasir_twin.adapter.method == "qlora" and kvasir_twin.prompts.adaptive["landmark"].keywords[0] == "landmark"
    assert kvasir_twin.base == "zoo:tiny-gemma3" and kvasir_twin.name == "medgemma-kvasir-vqa-tiny"


def test_medgemma_dry_run_offline_sizes_the_real_model_from_its_config():
    """Offline, MedGemma not downloaded: `--dry-run` on data in Kvasir-VQA's schema still gives the
    real model's numbers (medzoo's copy of its config), a GPU estimate per method and the cache size."""
    from medzoo.train import train

    lines = []
    recipe = load_recipe("medgemma-kvasir-vqa", ["data.source=disk", "data.path=fixture:kvasir-vqa"])
    report = train(recipe, dry_run=True, log=lines.append)
    plan = report["plan"]
    assert report["measured"] is None and "HF_HUB_OFFLINE=1" in "\n".join(lines)
    assert plan["parameters"] == 4_300_079_472  # the Hub checkpoint's safetensors count
    assert plan["vision_parameters"] == 416_866_032 + 2_950_272  # SigLIP + projector
    # LoRA r=16 on every linear layer of the 34 decoder layers (q,k,v,o,gate,up,down):
    # 16 x 34 x ((2560+2048) + 2 x (2560+1024) + (2048+2560) + 3 x (2560+10240)) = 29,802,496.
    assert plan["trainable"] == 16 * 34 * ((2560 + 2048) + 2 * (2560 + 1024) + (2048 + 2560) + 3 * (2560 + 10240))
    assert plan["tokens_per_image"] == 256 and plan["train_examples"] == 144
    memory = plan["memory_gib"]
    assert 4 < memory["qlora_nf4"] < memory["lora_bf16"] < 12
    # uint8 896 x 896 RGB per example (the MedGemma recipe sets image_size 896)
    assert plan["cache_gb"] == pytest.approx(144 * (3 * 896 * 896 + plan["tokens_per_example"] * 32) / 1e9, abs=0.01)
    assert any(line.startswith("GPU memory estimate at batch 4 x") for line in lines)


@pytest.mark.parametrize("name", SEEDS)
def test_every_seed_base_has_a_kept_config_that_builds_at_its_published_size(name):
    from medzoo.models.sizing import base_config, meta_model

    published = {
        "google/medgemma-4b-it": 4_300_079_472,
        "Qwen/Qwen2.5-VL-7B-Instruct": 8_292_166_656,
        "Qwen/Qwen2-VL-7B-Instruct": 8_291_375_616,
        "Qwen/Qwen3-VL-4B-Instruct": 4_437_815_808,
    }
    base = load_recipe(name).base
    config, source = base_config(base)
    assert "medzoo's copy" in source
    params = {id(p): p.numel() for p in meta_model(config).parameters()}
    assert sum(params.values()) == published[base]


def test_a_hub_base_offline_without_a_kept_config_says_what_to_do():
    from medzoo.errors import MissingState
    from medzoo.models.loading import model_type_of

    with pytest.raises(
        MissingState, match=r"^base: someone/unknown-vlm: not in the Hugging Face cache and HF_HUB_OFFLINE=1"
    ):
        model_type_of("someone/unknown-vlm")
    with pytest.raises(MissingState, match=r"^base: ./no/such/folder: no such folder"):
        model_type_of("./no/such/folder")


def test_conversation_json_errors_name_the_file_and_record(tmp_path):
    from medzoo.data.records import AnnotationError, conversation_rows

    bad = tmp_path / "a.json"
    bad.write_text(json.dumps([{"image": "x.png", "conversations": [{"from": "human", "value": "<image>\\nq"}]}]))
    with pytest.raises(
        AnnotationError, match=r"a.json: record 0: expected 'conversations' with a human and a gpt turn"
    ):
        conversation_rows(bad)
    bad.write_text(
        json.dumps(
            [
                {
                    "image": ["x.png", "y.png"],
                    "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}],
                }
            ]
        )
    )
    with pytest.raises(AnnotationError, match=r"record 0: 1 <image> tags for 2 images"):
        conversation_rows(bad)
    bad.write_text("[{")
    with pytest.raises(AnnotationError, match=r"a.json: line 1: not valid JSON"):
        conversation_rows(bad)


def test_registry_mix_samples_percent_and_keeps_multi_image_records():
    from medzoo.data.sources import load_splits

    r = load_recipe("qwen3vl-flare25-tiny")
    dd = load_splits(r.data)
    ids = list(dd["train"]["id"]) + list(dd["test"]["id"])
    assert sum(i.startswith("flare_ct-") for i in ids) == 60  # 50% of 120
    assert sum(i.startswith("flare_mri-") for i in ids) == 60
    row = next(x for x in dd["train"] if x["id"].startswith("flare_mri-"))
    assert len(row["images"]) == 2 and "<image>" not in row["question"]
    assert load_splits(r.data)["train"]._fingerprint == dd["train"]._fingerprint  # stable: the cache can hit


def test_dicom_and_nifti_spacing_reaches_the_measurement_prompt():
    import nibabel as nib
    import pydicom

    from medzoo.data.fixtures import fixture_path
    from medzoo.data.sources import load_splits
    from medzoo.prompts import user_text
    from medzoo.recipe import apply_values

    r = apply_values(load_recipe("phantom-tiny"), {"data.source": "table", "data.path": "fixture:ct-measure"})
    folder = fixture_path("ct-measure")
    dd = load_splits(r.data)
    assert set(dd) == {"train", "test"} and len(dd["test"]) == 4
    seen = set()
    for row in dd["train"]:
        meta = json.loads(row["metadata"])
        seen.add(meta["source_format"])
        assert meta["windowing"] == "center 40 width 400"
        assert row["image"].size == (96, 96)
        text = user_text(row, (96, 96))
        assert f"one pixel is {meta['pixel_spacing_mm'][1]:.4f} mm wide" in text
    assert seen == {"dicom", "nifti"}
    # The spacing is the files' own (rows 0 and 1 of the CSV are case000.dcm and case001.nii.gz).
    by_id = {x["id"]: json.loads(x["metadata"]) for x in dd["train"]}
    dcm = pydicom.dcmread(str(folder / "case000.dcm"))
    nii = nib.load(str(folder / "case001.nii.gz"))
    assert by_id["annotations-0"]["pixel_spacing_mm"] == [float(v) for v in dcm.PixelSpacing]
    assert by_id["annotations-1"]["pixel_spacing_mm"] == [
        float(nii.header.get_zooms()[1]),
        float(nii.header.get_zooms()[0]),
    ]
    assert (by_id["annotations-0"]["source_format"], by_id["annotations-1"]["source_format"]) == ("dicom", "nifti")


def test_check_reports_counts_and_unreadable_images(tmp_path):
    out = run_medzoo("check", "qwen3vl-flare25-tiny")
    assert "train: 108 examples (flare_ct 52, flare_mri 56)" in out.stdout
    assert "every image exists and decodes" in out.stdout and "2 image(s)" in out.stdout
    assert out.stdout.rstrip().endswith("ok")

    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(images / "a.png")
    (images / "b.png").write_bytes(b"not a png")
    (tmp_path / "train.json").write_text(
        json.dumps(
            [
                {
                    "image": "a.png",
                    "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}],
                },
                {
                    "image": "b.png",
                    "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}],
                },
                {
                    "image": "c.png",
                    "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "nan"}],
                },
            ]
        )
    )
    out = run_medzoo(
        "check",
        "phantom-tiny",
        "--no-sample",
        "--set",
        "data.source=conversations",
        "--set",
        f"data.path={tmp_path}",
        "--set",
        f"data.images_root={images}",
        check=False,
    )
    assert out.returncode == 1
    assert "unreadable images: 2" in out.stdout
    assert "does not decode" in out.stdout
    assert "missing file" in out.stdout and "answers dropped as empty/nan: 1" in out.stdout


def test_a_training_run_reads_its_dataset_once(tmp_path):
    """train() asks for the splits several times (validation, stages, fingerprint, held-out rows);
    inside `loaded_once` annotation files (and their DICOM/NIfTI conversions) are read once, and
    outside it an edited file is seen again."""
    from PIL import Image

    from medzoo.data import sources

    Image.new("RGB", (32, 32), "red").save(tmp_path / "a.png")
    table = tmp_path / "rows.json"
    table.write_text(json.dumps([{"image": "a.png", "question": "colour?", "answer": "red"}]))
    spec = load_recipe("phantom-tiny", ["data.source=table", f"data.path={table}"]).data
    calls = []
    real = sources._load_splits
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sources, "_load_splits", lambda s: calls.append(1) or real(s))
        with sources.loaded_once():
            first = sources.load_splits(spec)
            with sources.loaded_once():  # nested use (tune -> train) shares the outer scope
                assert sources.load_splits(spec) is first
        assert len(calls) == 1
        table.write_text(json.dumps([{"image": "a.png", "question": "colour?", "answer": "blue"}]))
        assert sources.load_splits(spec)["train"][0]["answer"] == "blue" and len(calls) == 2
