"""Drawing primitives for the phantom: per-example random streams, backgrounds, discs, ellipses,
landmarks, PNG bytes. Geometry in pixels; images are numpy arrays (grey float or RGB uint8)."""

from __future__ import annotations

import io
import math
from pathlib import Path

SPLITS = ("train", "validation", "test")
# Real DICOM slices (pydicom-data) with PixelSpacing, usable as measurement backgrounds.
DICOM_BACKGROUNDS = ("693_UNCI.dcm", "MR2_UNCI.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm", "explicit_VR-UN.dcm")


def rng_for(seed: int, split: str, task_index: int, index: int):
    """Each example's own stream: more training examples never change another split's images."""
    import numpy as np

    key = [seed, SPLITS.index(split), task_index, index]
    return np.random.default_rng(key)


def anatomy_background(rng, size: int):
    """Grey 'body' ellipse with a smooth gradient, two darker 'organs' and noise (float 0..255)."""
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.full((size, size), 20.0, np.float32)
    body = ((xx - 0.5) / 0.46) ** 2 + ((yy - 0.5) / 0.42) ** 2 < 1
    img[body] = 110 + 40 * yy[body]
    for _ in range(2):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        rx, ry = rng.uniform(0.08, 0.16, 2)
        img[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1] -= 35
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return img


def dicom_background(rng, size: int):
    """A real CT/MR slice windowed to 8 bits and resized; returns (image, spacing_mm, source)."""
    import data_store  # the pydicom-data package
    import numpy as np
    import pydicom
    from PIL import Image

    name = DICOM_BACKGROUNDS[int(rng.integers(len(DICOM_BACKGROUNDS)))]
    ds = pydicom.dcmread(Path(data_store.__file__).parent / "data" / name)
    arr = ds.pixel_array.astype(np.float32)
    # Explicit, recorded windowing: 1st..99th percentile mapped to 0..255.
    lo, hi = np.percentile(arr, [1, 99])
    arr = np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    resized = np.asarray(Image.fromarray(arr.astype(np.uint8)).resize((size, size), Image.BILINEAR), np.float32)
    spacing = float(ds.PixelSpacing[0]) * ds.Rows / size
    return resized, spacing, {"dicom": name, "window": "p1-p99", "native_spacing_mm": float(ds.PixelSpacing[0])}


def to_rgb(grey):
    import numpy as np

    g = np.clip(grey, 0, 255).astype(np.uint8)
    return np.stack([g, g, g], axis=-1)


def disk(img, cx, cy, r, colour):
    import math

    import numpy as np

    h, w = img.shape[:2]
    # Only the disc's bounding box can pass the test: the same pixels as testing the whole image,
    # with a fraction of the work (the instrument alone is 256 discs per image).
    y0, y1 = max(0, math.floor(cy - r)), min(h, math.ceil(cy + r) + 1)
    x0, x1 = max(0, math.floor(cx - r)), min(w, math.ceil(cx + r) + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]  # broadcast: the same values as a full grid
    img[y0:y1, x0:x1][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = colour


def ellipse_mask(size, cx, cy, a, b, theta):
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    c, s = math.cos(theta), math.sin(theta)
    u, v = dx * c + dy * s, -dx * s + dy * c
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def landmark(img, x, y, colour=(255, 255, 0)):
    """A small cross: big enough to survive resizing to the model's input size."""
    h, w = img.shape[:2]
    xi, yi = int(round(x)), int(round(y))
    for d in range(-3, 4):
        for px, py in ((xi + d, yi), (xi, yi + d)):
            if 0 <= px < w and 0 <= py < h:
                img[py, px] = colour


def png_bytes(rgb) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
