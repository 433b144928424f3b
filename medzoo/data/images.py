"""Every image an engine or the trainer sees goes through `as_rgb`: one normalisation for all of them.

PIL's plain `.convert("RGB")` clips 16-bit and 32-bit grey to 0..255 (a 16-bit X-ray becomes
white), turns transparent pixels into whatever colour they hide, and ignores the EXIF orientation a
camera wrote. Here: EXIF rotation applied, high-bit-depth grey scaled from its own range to 8 bits,
transparency composited on black, then RGB.

`for_model` bounds an image to what the model's processor keeps: one much larger than the size the
processor resizes it to (a 4000 x 3000 photo for a model that sees 448 x 336) is downscaled first, to
twice that size, so decoding and resizing it costs memory and time once, the same way in training
and in every engine.
"""

from __future__ import annotations

HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
MIN_BOUND = 1024  # never downscale below this long side, whatever the model sees


def as_rgb(image):
    """A PIL image as the 8-bit RGB image every engine is given."""
    import numpy as np
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in HIGH_BIT_DEPTH_MODES:
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(scaled.round().astype(np.uint8), "L")
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return image.convert("RGB")


def for_model(image, family, settings: dict):
    """(an RGB `image` no larger than twice what the processor keeps, whether it was downscaled)."""
    from PIL import Image

    w, h = image.size
    limit = max(2 * max(family.perceived_size(w, h, settings)), MIN_BOUND)
    if max(w, h) <= limit:
        return image, False
    scale = limit / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(size, Image.Resampling.LANCZOS), True
