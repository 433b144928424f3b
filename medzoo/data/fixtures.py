"""Offline stand-ins for the seed workflows' datasets, in the SAME schema as the real ones.

A recipe's `data.path: fixture:NAME` generates (once, deterministically) a folder under
$MEDZOO_HOME/fixtures and then reads it with the same loader real data goes through. The images and
answers come from the phantom generator, so answers depend on the image.

    kvasir-vqa           `datasets` folder with one `raw` split like SimulaMet-HOST/Kvasir-VQA
                         (image, source, question, answer, img_id), a few answers are the string "nan"
    flare25              Qwen/LLaVA conversation JSON, two datasets (one with two images per record)
    surgical-curriculum  JSON of {image_id, question, answer, stage} + images/<image_id>.png
    ct-measure           CSV of DICOM (.dcm) and NIfTI (.nii.gz) slices with two marked points;
                         the answer is their distance in mm from the file's own pixel spacing
"""

from __future__ import annotations

import json
from pathlib import Path

from medzoo.errors import InvalidValue
from medzoo.paths import medzoo_home

FIXTURES = ("kvasir-vqa", "flare25", "surgical-curriculum", "ct-measure")


def fixture_path(name: str, seed: int = 0) -> Path:
    if name not in FIXTURES:
        raise InvalidValue(f"data.path: fixture:{name}: unknown fixture; expected one of {', '.join(FIXTURES)}")
    from medzoo.atomic import build_dir

    out = medzoo_home() / "fixtures" / f"{name}-{seed}"
    if not (out / "fixture.json").exists():
        try:
            with build_dir(out) as tmp:
                {
                    "kvasir-vqa": _kvasir,
                    "flare25": _flare25,
                    "surgical-curriculum": _surgical,
                    "ct-measure": _ct_measure,
                }[name](tmp, seed)
                (tmp / "fixture.json").write_text(json.dumps({"fixture": name, "seed": seed}))
        except FileExistsError:
            pass
    return out


def _vqa_examples(seed: int, split: str, n: int) -> list[dict]:
    from medzoo.data.phantom import PhantomConfig, make_example

    cfg = PhantomConfig(tasks=("vqa",), seed=seed, image_size=112)
    return [make_example(cfg, split, "vqa", i) for i in range(n)]


def _kvasir(folder: Path, seed: int) -> None:
    from datasets import Dataset, DatasetDict, Features, Image, Value

    rows = []
    for i, ex in enumerate(_vqa_examples(seed, "train", 160)):
        answer = "nan" if i % 40 == 7 else ex["answer"]  # the real dataset has literal "nan" answers
        rows.append(
            {
                "image": ex["image"],
                "source": "phantom",
                "question": ex["question"],
                "answer": answer,
                "img_id": f"img{i:04d}",
            }
        )
    feats = Features(
        {
            "image": Image(),
            "source": Value("string"),
            "question": Value("string"),
            "answer": Value("string"),
            "img_id": Value("string"),
        }
    )
    DatasetDict({"raw": Dataset.from_list(rows, features=feats)}).save_to_disk(str(folder))


def _flare25(folder: Path, seed: int) -> None:
    (folder / "images").mkdir()
    ct, mri = [], []
    for i, ex in enumerate(_vqa_examples(seed, "train", 120)):
        (folder / "images" / f"{i:04d}.png").write_bytes(ex["image"]["bytes"])
        ct.append(
            {
                "id": i,
                "image": f"{i:04d}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\n" + ex["question"]},
                    {"from": "gpt", "value": ex["answer"]},
                ],
            }
        )
    for i, ex in enumerate(_vqa_examples(seed + 1, "train", 60)):
        (folder / "images" / f"mri-{i:04d}.png").write_bytes(ex["image"]["bytes"])
        # Two images per record: the finding is in the second; the first is a previous frame.
        mri.append(
            {
                "id": i,
                "image": [f"{(i * 7) % 120:04d}.png", f"mri-{i:04d}.png"],
                "conversations": [
                    {"from": "human", "value": "<image>\n<image>\nIn the second image: " + ex["question"]},
                    {"from": "gpt", "value": ex["answer"]},
                ],
            }
        )
    (folder / "flare_ct.json").write_text(json.dumps(ct, indent=1))
    (folder / "flare_mri.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mri))


def _surgical(folder: Path, seed: int) -> None:
    (folder / "images").mkdir()
    stage_of = {"presence": 1, "instrument": 1, "colour": 2, "size": 2, "counting": 3, "location": 3}
    records = []
    for split, n in (("train", 150), ("test", 30)):
        for i, ex in enumerate(_vqa_examples(seed, split, n)):
            image_id = f"{split}-{i:04d}"
            (folder / "images" / f"{image_id}.png").write_bytes(ex["image"]["bytes"])
            records.append(
                {
                    "image_id": image_id,
                    "question": ex["question"],
                    "answer": ex["answer"],
                    "stage": stage_of[ex["category"]],
                    "category": ex["category"],
                    "split": split,
                }
            )
    (folder / "annotations.json").write_text(json.dumps(records, indent=1))


def _ct_measure(folder: Path, seed: int) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(24):
        size, spacing = 96, float(rng.choice([0.5, 0.7, 0.9]))
        hu = rng.normal(40, 15, (size, size)).astype(np.float32)  # soft tissue in Hounsfield units
        (x0, y0), (x1, y1) = rng.uniform(12, size - 12, (2, 2))
        for x, y in ((x0, y0), (x1, y1)):
            yy, xx = np.mgrid[0:size, 0:size]
            hu[(xx - x) ** 2 + (yy - y) ** 2 <= 9] = 1000.0  # bright calcification-like marks
        dist = float(np.hypot(x1 - x0, y1 - y0) * spacing)
        name = f"case{i:03d}" + (".dcm" if i % 2 == 0 else ".nii.gz")
        (_write_dicom if i % 2 == 0 else _write_nifti)(folder / name, hu, spacing)
        meta = {"image_size": [size, size]}
        rows.append(
            {
                "image": name,
                "question": "What is the distance between the two bright marks in millimetres?",
                "answer": f"{dist:.1f}",
                "task": "distance",
                "window_center": 40,
                "window_width": 400,
                "split": "test" if i >= 20 else "train",
                "metadata": json.dumps(meta),
            }
        )
    import csv

    with open(folder / "annotations.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _write_dicom(path: Path, hu, spacing: float) -> None:
    import numpy as np
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path.name])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    ds.Rows, ds.Columns = hu.shape
    ds.PixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = (hu + 1024).round().astype(np.int16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def _write_nifti(path: Path, hu, spacing: float) -> None:
    import nibabel as nib
    import numpy as np

    vol = np.stack([hu.T] * 3, axis=2)  # x, y, z; the middle slice is the marked one
    img = nib.Nifti1Image(vol.astype(np.float32), np.diag([spacing, spacing, 2.5, 1.0]))
    img.header.set_zooms((spacing, spacing, 2.5))
    nib.save(img, str(path))
