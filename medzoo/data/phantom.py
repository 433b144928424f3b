"""A deterministic synthetic medical dataset whose answers depend on the image.

Each example is drawn from its own random stream seeded by (seed, split, index), so adding more
training examples never changes the test split, and the same call always writes the same bytes.
Ground truth comes from the geometry that was drawn, never from the text.

Tasks (mirroring the seeds):
- `vqa`: Kvasir-VQA-style short answers about an endoscopy-like frame (finding present, colour,
  count, quadrant, size class, instrument present).
- `distance` / `angle`: landmarks drawn on a grey "anatomy" image; answer in mm / degrees using the
  image's pixel spacing (stored in `metadata`; the prompt states it, see medzoo.prompts).
- `detection`: normalised [x1, y1, x2, y2] box of the lesion; origin `upper-left` or `lower-left`
  (MedVision uses lower-left).
- `lesion-size`: an elliptical lesion; major and minor axis lengths in mm.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from medzoo.data.drawing import (
    anatomy_background,
    dicom_background,
    disk,
    ellipse_mask,
    landmark,
    png_bytes,
    rng_for,
    to_rgb,
)
from medzoo.errors import AlreadyExists, InvalidValue

PHANTOM_VERSION = 3  # bump whenever generation changes: it is part of the dataset fingerprint
TASKS = ("vqa", "distance", "angle", "detection", "lesion-size")
DECIMALS = {"distance": 1, "angle": 1, "detection": 2, "lesion-size": 1}
BOX_ORIGINS = ("upper-left", "lower-left")

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
QUADRANTS = ("upper-left", "upper-right", "lower-left", "lower-right")
SIZE_CLASSES = ((0.06, 0.09, "small"), (0.11, 0.14, "medium"), (0.17, 0.21, "large"))

# Kvasir-VQA-like question templates per category: (question, how the answer is derived).
VQA_QUESTIONS = {
    "presence": ["Is there a polyp in the image?", "Are there any abnormalities in the image?"],
    "colour": ["What color is the abnormality?", "What is the colour of the polyp?"],
    "counting": ["How many polyps are in the image?", "How many findings are visible?"],
    "location": ["Where in the image is the abnormality?", "In which quadrant is the polyp located?"],
    "size": ["What is the size of the polyp?", "How large is the finding?"],
    "instrument": ["Are there any instruments in the image?", "Is a surgical instrument visible?"],
}
MEASURE_QUESTIONS = {
    "distance": "What is the distance between landmark A and landmark B in millimetres?",
    "angle": "What is the angle ABC at landmark B in degrees?",
    "detection": "Give the bounding box of the lesion as normalised [x1, y1, x2, y2].",
    "lesion-size": "What are the major and minor axis lengths of the lesion in millimetres?",
}


@dataclass(frozen=True)
class PhantomConfig:
    tasks: tuple[str, ...] = ("vqa",)
    n_train: int = 200
    n_val: int = 50
    n_test: int = 50
    seed: int = 0
    image_size: int = 128
    box_origin: str = "lower-left"
    background: str = "synthetic"  # or "dicom": real slices from pydicom-data for measurement tasks

    def __post_init__(self):
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise InvalidValue(f"phantom: unknown task {bad[0]!r}; expected one of {', '.join(TASKS)}")
        if self.box_origin not in BOX_ORIGINS:
            raise InvalidValue(f"phantom: box_origin must be one of {BOX_ORIGINS}, got {self.box_origin!r}")
        if self.background not in ("synthetic", "dicom"):
            raise InvalidValue(f"phantom: background must be 'synthetic' or 'dicom', got {self.background!r}")
        if self.image_size < 32:
            raise InvalidValue(f"phantom: image_size must be >= 32, got {self.image_size}")
        for name, n in (("n_train (--n)", self.n_train), ("n_val", self.n_val), ("n_test", self.n_test)):
            if not isinstance(n, int) or n < 1:  # an empty split saves a dataset that cannot be loaded
                raise InvalidValue(f"phantom: {name} must be a positive integer, got {n!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidValue(f"phantom: seed must be an integer >= 0, got {self.seed!r}")

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "validation": self.n_val, "test": self.n_test}

    def fingerprint(self) -> str:
        import hashlib

        blob = json.dumps({**self.__dict__, "version": PHANTOM_VERSION}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- tasks


def _vqa(rng, cfg: PhantomConfig):
    import numpy as np

    size = cfg.image_size
    # Endoscopy-like pinkish frame with a dark vignette.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    r = np.sqrt((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    base = np.clip(1.0 - 1.4 * r, 0.15, 1.0)[..., None] * np.array([200, 120, 110], np.float32)
    img = np.clip(base + rng.normal(0, 5, base.shape), 0, 255).astype(np.uint8)

    category = str(rng.choice(list(VQA_QUESTIONS)))
    question = str(rng.choice(VQA_QUESTIONS[category]))
    if category in ("location", "size"):
        count = 1  # "where is / how large is the polyp" must have one answer
    elif category == "presence":
        count = 0 if rng.random() < 0.5 else int(rng.integers(1, 4))  # balanced yes / no
    else:
        count = int(rng.integers(1, 4))
    colour = str(rng.choice(list(COLOURS)))
    quadrant = str(rng.choice(QUADRANTS))
    lo, hi, size_class = SIZE_CLASSES[int(rng.integers(len(SIZE_CLASSES)))]
    instrument = bool(rng.integers(2))
    if instrument:  # a bright metallic bar entering from the image border, as forceps do
        t = np.linspace(0, 1, 2 * size)
        x0, y0 = size - 1, size * rng.uniform(0.6, 0.95)
        x1, y1 = size * rng.uniform(0.45, 0.6), size * rng.uniform(0.4, 0.55)
        for k in t:
            disk(img, x0 + (x1 - x0) * k, y0 + (y1 - y0) * k, 0.05 * size, (235, 235, 240))
    findings = []  # drawn after the instrument, never overlapping each other, so counts are exact
    for i in range(count):
        if i == 0:  # the first finding sits in the asked-about quadrant with the asked-about size
            qx, qy = QUADRANTS.index(quadrant) % 2, QUADRANTS.index(quadrant) // 2
            rad = rng.uniform(lo, hi) * size
            cx = (qx + rng.uniform(0.35, 0.65)) * size / 2
            cy = (qy + rng.uniform(0.35, 0.65)) * size / 2
        else:  # extra findings are medium-sized and placed apart from the others
            rad = 0.09 * size
            for _ in range(100):
                cx, cy = rng.uniform(0.12, 0.88, 2) * size
                if all((cx - f[0]) ** 2 + (cy - f[1]) ** 2 > (f[2] + rad + 3) ** 2 for f in findings):
                    break
            else:
                break  # no room: the count is what was drawn
        findings.append((float(cx), float(cy), float(rad)))
        disk(img, cx, cy, rad, COLOURS[colour])
    count = len(findings)

    answer = {
        "presence": "yes" if count else "no",
        "colour": colour,
        "counting": str(count),
        "location": quadrant,
        "size": size_class,
        "instrument": "yes" if instrument else "no",
    }[category]
    meta = {"findings": findings, "instrument": instrument}
    return img, question, answer, category, meta, 1.0


def _measure_image(rng, cfg: PhantomConfig):
    size = cfg.image_size
    if cfg.background == "dicom":
        grey, spacing, source = dicom_background(rng, size)
    else:
        grey = anatomy_background(rng, size)
        spacing = float(round(rng.uniform(0.3, 1.2), 3))
        source = {"synthetic": True}
    return to_rgb(grey), spacing, source


def _distance(rng, cfg: PhantomConfig):
    img, spacing, source = _measure_image(rng, cfg)
    size = cfg.image_size
    while True:
        a, b = rng.uniform(0.12, 0.88, (2, 2)) * size
        if math.dist(a, b) > 0.2 * size:
            break
    landmark(img, *a, colour=(255, 60, 60))
    landmark(img, *b, colour=(60, 255, 60))
    mm = math.dist(a, b) * spacing
    meta = {"landmarks": {"A": a.tolist(), "B": b.tolist()}, **source}
    return img, MEASURE_QUESTIONS["distance"], f"{mm:.{DECIMALS['distance']}f}", "distance", meta, spacing


def _angle(rng, cfg: PhantomConfig):
    img, spacing, source = _measure_image(rng, cfg)
    size = cfg.image_size
    while True:
        a, b, c = rng.uniform(0.12, 0.88, (3, 2)) * size
        if min(math.dist(a, b), math.dist(b, c)) > 0.2 * size:
            break
    for p, col in ((a, (255, 60, 60)), (b, (255, 255, 0)), (c, (60, 255, 60))):
        landmark(img, *p, colour=col)
    v1, v2 = a - b, c - b
    cos = float((v1 @ v2) / (math.hypot(*v1) * math.hypot(*v2)))
    deg = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
    meta = {"landmarks": {"A": a.tolist(), "B": b.tolist(), "C": c.tolist()}, **source}
    return img, MEASURE_QUESTIONS["angle"], f"{deg:.{DECIMALS['angle']}f}", "angle", meta, spacing


def _lesion(rng, cfg: PhantomConfig):
    """Draw a bright rotated ellipse; returns geometry (cx, cy, a, b, theta) in pixels."""
    img, spacing, source = _measure_image(rng, cfg)
    size = cfg.image_size
    a = rng.uniform(0.08, 0.22) * size
    b = rng.uniform(0.45, 0.95) * a
    theta = rng.uniform(0, math.pi)
    margin = a + 2
    cx, cy = rng.uniform(margin, size - margin, 2)
    img[ellipse_mask(size, cx, cy, a, b, theta)] = (235, 235, 235)
    return img, spacing, source, (float(cx), float(cy), float(a), float(b), float(theta))


def _detection(rng, cfg: PhantomConfig):
    img, spacing, source, (cx, cy, a, b, theta) = _lesion(rng, cfg)
    size = cfg.image_size
    # Exact axis-aligned extent of the rotated ellipse.
    hw = math.sqrt((a * math.cos(theta)) ** 2 + (b * math.sin(theta)) ** 2)
    hh = math.sqrt((a * math.sin(theta)) ** 2 + (b * math.cos(theta)) ** 2)
    x1, x2 = (cx - hw) / size, (cx + hw) / size
    y1, y2 = (cy - hh) / size, (cy + hh) / size
    if cfg.box_origin == "lower-left":
        y1, y2 = 1 - y2, 1 - y1
    box = [min(max(v, 0.0), 1.0) for v in (x1, y1, x2, y2)]
    d = DECIMALS["detection"]
    answer = "[" + ", ".join(f"{v:.{d}f}" for v in box) + "]"
    meta = {"box": box, "box_origin": cfg.box_origin, **source}
    return img, MEASURE_QUESTIONS["detection"], answer, "detection", meta, spacing


def _lesion_size(rng, cfg: PhantomConfig):
    img, spacing, source, (cx, cy, a, b, theta) = _lesion(rng, cfg)
    d = DECIMALS["lesion-size"]
    major, minor = 2 * a * spacing, 2 * b * spacing
    answer = f"major axis: {major:.{d}f} mm, minor axis: {minor:.{d}f} mm"
    meta = {"ellipse": [cx, cy, a, b, theta], "major_mm": major, "minor_mm": minor, **source}
    return img, MEASURE_QUESTIONS["lesion-size"], answer, "lesion-size", meta, spacing


_MAKERS = {"vqa": _vqa, "distance": _distance, "angle": _angle, "detection": _detection, "lesion-size": _lesion_size}


def make_example(cfg: PhantomConfig, split: str, task: str, index: int) -> dict:
    """One example as a plain dict (image as PNG bytes)."""
    img, question, answer, category, meta, spacing = _MAKERS[task](
        rng_for(cfg.seed, split, TASKS.index(task), index), cfg
    )
    meta = {**meta, "pixel_spacing_mm": [spacing, spacing], "image_size": [cfg.image_size, cfg.image_size]}
    return {
        "id": f"{task}-{split}-{index:05d}",
        "image": {"bytes": png_bytes(img), "path": None},
        "question": question,
        "answer": answer,
        "task": task,
        "category": category,
        "metadata": json.dumps(meta, sort_keys=True),
    }


def features():
    from datasets import Features, Image, Value

    return Features(
        {
            "id": Value("string"),
            "image": Image(),
            "question": Value("string"),
            "answer": Value("string"),
            "task": Value("string"),
            "category": Value("string"),
            "metadata": Value("string"),
        }
    )


def generate(cfg: PhantomConfig, progress: bool = False):
    """Build the phantom as a `datasets.DatasetDict` (train / validation / test)."""
    from datasets import Dataset, DatasetDict
    from tqdm.auto import tqdm

    splits = {}
    total = sum(cfg.split_sizes().values()) * len(cfg.tasks)
    bar = tqdm(total=total, desc="phantom", unit="img", disable=not progress)
    for split, n in cfg.split_sizes().items():
        rows = []
        for task in cfg.tasks:
            for i in range(n):
                rows.append(make_example(cfg, split, task, i))
                bar.update()
        columns = {k: [r[k] for r in rows] for k in features()}
        ds = Dataset.from_dict(columns, features=features())
        # A content-derived fingerprint (datasets would pick a random one) keeps bytes reproducible.
        ds._fingerprint = f"{cfg.fingerprint()}-{split}"
        splits[split] = ds
    bar.close()
    return DatasetDict(splits)


def write(cfg: PhantomConfig, out: str | Path, fmt: str = "datasets", progress: bool = False) -> Path:
    """Write the phantom to `out` atomically, as a `datasets` folder or as LLaVA/Qwen JSON + PNGs."""
    from medzoo.atomic import build_dir

    out = Path(out)
    if out.exists():
        raise AlreadyExists(f"{out}: already exists; choose another --out or remove it")
    dd = generate(cfg, progress=progress)
    with build_dir(out) as tmp:
        if fmt == "datasets":
            dd.save_to_disk(str(tmp))
        elif fmt == "llava":
            _write_llava(dd, tmp)
        else:
            raise InvalidValue(f"phantom: unknown format {fmt!r}; expected 'datasets' or 'llava'")
        (tmp / "phantom.json").write_text(json.dumps({"config": cfg.__dict__, "format": fmt}, indent=2, default=list))
    return out


def _write_llava(dd, folder: Path) -> None:
    """Qwen/LLaVA conversation JSON: one `<split>.json` per split, images under images/."""
    (folder / "images").mkdir()
    for split, ds in dd.items():
        records = []
        for row in ds.with_format(None).cast_column("image", _raw_image()):
            rel = f"images/{row['id']}.png"
            (folder / rel).write_bytes(row["image"]["bytes"])
            records.append(
                {
                    "id": row["id"],
                    "image": rel,
                    "conversations": [
                        {"from": "human", "value": "<image>\n" + row["question"]},
                        {"from": "gpt", "value": row["answer"]},
                    ],
                    "task": row["task"],
                    "category": row["category"],
                    "metadata": json.loads(row["metadata"]),
                }
            )
        (folder / f"{split}.json").write_text(json.dumps(records, indent=1))


def _raw_image():
    from datasets import Image

    return Image(decode=False)


def corpus_text() -> str:
    """Words medzoo's tasks and prompts use: the corpus the tiny Gemma tokenizer is trained on."""
    from medzoo import prompts

    lines = []
    for qs in VQA_QUESTIONS.values():
        lines += qs
    lines += list(MEASURE_QUESTIONS.values())
    lines += list(COLOURS) + list(QUADRANTS) + [s[2] for s in SIZE_CLASSES] + ["yes", "no"]
    lines += prompts.corpus_lines()
    lines += [" ".join(str(d) for d in range(10)), "0.1 2.3 45.6 [0.12, 0.34, 0.56, 0.78] 90 180 360 mm"]
    lines += [
        "You are a helpful medical imaging assistant. Answer briefly and precisely.",
        "The image shows a colonoscopy frame, a CT slice, an MRI slice, an X-ray or an ultrasound.",
        "user model system assistant image question answer",
    ]
    return "\n".join(lines * 3)
