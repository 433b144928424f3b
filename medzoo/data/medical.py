"""DICOM and NIfTI slices read the way radiology software reads them, as 8-bit images plus metadata.

DICOM (detected by content, the `DICM` marker at byte 128, or a .dcm name), through pydicom's own
pixel pipeline: the decoders pydicom uses (pylibjpeg for JPEG, JPEG-LS, JPEG 2000), the modality
LUT (rescale slope/intercept or a LUT sequence), then the window: the row's `window_center` /
`window_width` if given, else the file's own VOI LUT or window, else the 1st..99th percentile;
MONOCHROME1 (bright = low values) is inverted so bone is white as in MONOCHROME2. Colour DICOM
stays colour: RGB (and YBR, which pydicom converts to RGB) as stored, PALETTE COLOR through the
file's palette (pydicom's apply_color_lut), scaled from the palette's bit depth to 8 bits; no window
applies to colour. Multi-frame files give one frame (`frame`, default the middle one).

Pixel spacing (row, column, mm): PixelSpacing, else ImagerPixelSpacing (the detector plane: no
magnification correction, noted as such), else the spacing an enhanced multi-frame file keeps in
its shared functional groups, else the recipe's `data.pixel_spacing_mm`; otherwise it stays
unknown and a measurement task refuses the example. Never a silent 1 mm, and never 0: a spacing
that is not a positive number is treated as absent (and said so in `spacing_source`).

NIfTI: reoriented to the closest canonical (RAS+) orientation first, so left/right and the spacing
order do not depend on how the file was written; the slice is taken along `slice_axis` (default 2,
axial) at `slice` (default the middle) and shown in radiological convention (patient right on the
image's left, anterior / superior at the top).
"""

from __future__ import annotations

import math
from pathlib import Path

from medzoo.errors import MedzooError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class MedicalImageError(MedzooError, ValueError):
    """A DICOM / NIfTI file that cannot give the slice asked for."""


def is_dicom(path: str | Path) -> bool:
    p = Path(path)
    if p.suffix.lower() == ".dcm":
        return True
    try:
        with open(p, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def is_medical(path: str | Path) -> bool:
    return is_nifti(path) or is_dicom(path)


def load_medical_image(path: str, meta: dict, default_spacing_mm: float | None = None):
    """A DICOM / NIfTI slice as an 8-bit RGB PIL image; fills `meta` with what was done: the format,
    frame or slice, photometric interpretation, windowing, pixel spacing and its source."""
    import numpy as np
    from PIL import Image

    if is_nifti(path):
        grey, spacing = _nifti(path, meta)
    else:
        grey, spacing = _dicom(path, meta)
    if spacing is None and default_spacing_mm is not None:
        spacing, meta["spacing_source"] = [float(default_spacing_mm)] * 2, "recipe data.pixel_spacing_mm"
    if spacing is not None:
        meta.setdefault("pixel_spacing_mm", spacing)
    meta.setdefault("image_size", [int(grey.shape[1]), int(grey.shape[0])])
    return Image.fromarray(grey if grey.ndim == 3 else np.stack([grey] * 3, axis=-1))


def _dicom(path: str, meta: dict):
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array
    except Exception as e:  # a decoder's own message names neither the file nor what to install
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise MedicalImageError(f"{path}: DICOM pixel data does not decode ({first})") from e
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    meta.update(source_format="dicom", frames=frames, photometric=str(getattr(ds, "PhotometricInterpretation", "")))
    k = int(meta.get("frame", frames // 2))
    if not 0 <= k < frames:
        raise MedicalImageError(f"{path}: frame {k} outside the file's {frames} frame(s) (frames count from 0)")
    if frames > 1:
        arr, meta["frame"] = arr[k], k
    if meta["photometric"] == "PALETTE COLOR" or (arr.ndim == 3 and arr.shape[-1] == 3):
        return _dicom_colour(arr, ds, meta), _dicom_spacing(ds, meta)
    if arr.ndim != 2:
        raise MedicalImageError(f"{path}: expected a greyscale image, got pixel data of shape {arr.shape}")
    values = apply_modality_lut(arr, ds)
    grey = _window_dicom(values, ds, meta)
    if meta["photometric"] == "MONOCHROME1":  # low values are bright: invert, as viewers do
        grey = 255 - grey
    return grey, _dicom_spacing(ds, meta)


def _dicom_colour(arr, ds, meta: dict):
    """A colour DICOM as 8-bit RGB: the palette applied for PALETTE COLOR, RGB samples as stored."""
    import numpy as np
    from pydicom.pixels import apply_color_lut

    if meta["photometric"] == "PALETTE COLOR":
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])  # 8 or 16 bits per palette entry
        rgb = apply_color_lut(arr, ds).astype(np.float64) / (2**bits - 1)
        meta["windowing"] = f"palette ({bits}-bit)"
        return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    bits = int(getattr(ds, "BitsStored", 8) or 8)
    meta["windowing"] = "none (colour)"
    if arr.dtype == np.uint8:
        return arr
    return (np.clip(arr.astype(np.float64) / (2**bits - 1), 0, 1) * 255).round().astype(np.uint8)


def _window_dicom(values, ds, meta: dict):
    """The row's window, else the file's VOI LUT / window, else p1-p99; 8 bits."""
    import numpy as np
    from pydicom.pixels import apply_voi_lut

    row_window = "window_center" in meta and "window_width" in meta
    if not row_window and ("VOILUTSequence" in ds or "WindowCenter" in ds):
        out = apply_voi_lut(values, ds)
        # The LUT's output range: the window (or table) applied to the lowest and highest inputs.
        probe = (
            np.array([np.iinfo(values.dtype).min, np.iinfo(values.dtype).max], dtype=values.dtype)
            if np.issubdtype(values.dtype, np.integer)
            else np.array([-1e12, 1e12])
        )
        lo, hi = (float(v) for v in apply_voi_lut(probe, ds))
        meta["windowing"] = "file VOI LUT" if "VOILUTSequence" in ds else _file_window_text(ds)
        return _to_uint8(out, lo, hi)
    return _row_window_or_percentiles(values, meta)


def _file_window_text(ds) -> str:
    from pydicom.multival import MultiValue

    center, width = ds.WindowCenter, ds.WindowWidth  # several windows: the first is the default
    center = center[0] if isinstance(center, MultiValue) else center
    width = width[0] if isinstance(width, MultiValue) else width
    return f"file window center {float(center):g} width {float(width):g}"


def _row_window_or_percentiles(values, meta: dict):
    """The row's `window_center` / `window_width`, else the 1st..99th percentile; recorded in meta."""
    import numpy as np

    if "window_center" in meta and "window_width" in meta:
        lo = meta["window_center"] - meta["window_width"] / 2
        hi = meta["window_center"] + meta["window_width"] / 2
        meta["windowing"] = f"center {meta['window_center']:g} width {meta['window_width']:g}"
    else:
        lo, hi = np.percentile(values, [1, 99])
        meta["windowing"] = "p1-p99"
    return _to_uint8(values, lo, hi)


def _to_uint8(values, lo: float, hi: float):
    import numpy as np

    scaled = (np.asarray(values, dtype=np.float64) - lo) / max(hi - lo, 1e-6)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def _dicom_spacing(ds, meta: dict) -> list[float] | None:
    invalid = None
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(ds, tag, None)
        if value:
            spacing = [float(v) for v in value]
            if len(spacing) != 2 or not all(math.isfinite(v) and v > 0 for v in spacing):
                invalid = invalid or f"unknown ({tag} {spacing} is not a positive spacing)"
                continue  # the next source may hold a real one
            meta["spacing_source"] = tag if tag == "PixelSpacing" else "ImagerPixelSpacing (detector plane)"
            return spacing
    try:  # enhanced multi-frame: Shared Functional Groups > Pixel Measures
        value = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        meta["spacing_source"] = "SharedFunctionalGroupsSequence PixelSpacing"
        return [float(v) for v in value]
    except (AttributeError, IndexError, KeyError):
        meta["spacing_source"] = invalid or "unknown"
        return None


def _nifti(path: str, meta: dict):
    import nibabel as nib
    import numpy as np

    img = nib.as_closest_canonical(nib.load(str(path)))  # RAS+: axis 0 -> right, 1 -> anterior, 2 -> superior
    vol = np.asarray(img.dataobj, dtype=np.float32)
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    if vol.ndim == 2:
        vol, zooms = vol[:, :, None], [*zooms[:2], 1.0]
    axis = int(meta.get("slice_axis", 2))
    if axis not in (0, 1, 2) or vol.ndim != 3:
        raise MedicalImageError(f"{path}: slice_axis {axis} for a volume of shape {vol.shape}; expected 0, 1 or 2")
    k = int(meta.get("slice", vol.shape[axis] // 2))
    if not 0 <= k < vol.shape[axis]:
        raise MedicalImageError(f"{path}: slice {k} outside the volume's {vol.shape[axis]} slices along axis {axis}")
    plane = np.take(vol, k, axis=axis)  # the two other axes, in order (a, b)
    a, b = (i for i in range(3) if i != axis)
    # rows along b, top = its positive end (anterior / superior); columns along a, reversed so that
    # the patient's right is on the image's left (radiological convention).
    arr = plane.T[::-1, ::-1]
    meta.update(source_format="nifti", slice=k, slice_axis=axis, spacing_source="NIfTI header (canonical)")
    return _row_window_or_percentiles(arr, meta), [zooms[b], zooms[a]]
