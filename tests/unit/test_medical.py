"""DICOM / NIfTI read as radiology software reads them, on real files shipped by pydicom and
pydicom-data: pixel values checked against the DICOM window formula and pydicom's own pipeline,
and the pixel spacing with its source."""

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medzoo.data.medical import is_dicom, load_medical_image


def _file(name: str) -> str:
    """A test file of pydicom's, or of pydicom-data's (both installed; nothing is downloaded)."""
    import data_store
    from pydicom.data import get_testdata_file

    local = Path(data_store.__file__).parent / "data" / name
    return str(local) if local.exists() else get_testdata_file(name, download=False)


def _grey(image) -> np.ndarray:
    arr = np.asarray(image)
    assert arr.ndim == 3 and (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()
    return arr[..., 0].astype(int)


def _linear_window(values, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 (linear VOI function), mapped to 0..255."""
    x = np.asarray(values, dtype=np.float64)
    out = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    out[x <= center - 0.5 - (width - 1) / 2] = 0
    out[x > center - 0.5 + (width - 1) / 2] = 255
    return out


def _modality(ds) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))


def test_ct_without_a_window_uses_the_recorded_percentiles_of_hounsfield_units():
    path = _file("CT_small.dcm")
    meta = {}
    grey = _grey(load_medical_image(path, meta))
    ds = pydicom.dcmread(path)
    hu = _modality(ds)  # the modality LUT: rescale slope / intercept
    lo, hi = np.percentile(hu, [1, 99])
    assert np.abs(grey - np.clip((hu - lo) / (hi - lo), 0, 1) * 255).max() <= 0.5 + 1e-9
    assert meta["windowing"] == "p1-p99" and meta["source_format"] == "dicom"
    assert meta["pixel_spacing_mm"] == [float(v) for v in ds.PixelSpacing] and meta["spacing_source"] == "PixelSpacing"


def test_mr_uses_the_files_own_window():
    path = _file("MR_small.dcm")
    meta = {}
    grey = _grey(load_medical_image(path, meta))
    ds = pydicom.dcmread(path)
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    assert meta["windowing"] == f"file window center {center:g} width {width:g}"
    assert np.abs(grey - _linear_window(_modality(ds), center, width)).max() <= 1
    assert meta["spacing_source"] == "PixelSpacing"


def test_a_row_window_overrides_the_files():
    meta = {"window_center": 100.0, "window_width": 200.0}
    grey = _grey(load_medical_image(_file("MR_small.dcm"), meta))
    ds = pydicom.dcmread(_file("MR_small.dcm"))
    expected = np.clip((_modality(ds) - 0) / 200, 0, 1) * 255
    assert np.abs(grey - expected).max() <= 0.5 + 1e-9 and meta["windowing"] == "center 100 width 200"


def test_monochrome1_is_inverted_so_bone_is_white():
    path = _file("RG1_UNCI.dcm")  # a computed radiograph stored as MONOCHROME1
    meta = {}
    grey = _grey(load_medical_image(path, meta))
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and meta["photometric"] == "MONOCHROME1"
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    windowed = _linear_window(_modality(ds), center, width)
    assert np.abs(grey - (255 - windowed)).max() <= 1
    # This file states PixelSpacing 0.000 \\ 0.000: no spacing, never "one pixel is 0 mm".
    assert [float(v) for v in ds.PixelSpacing] == [0.0, 0.0] and "pixel_spacing_mm" not in meta
    assert meta["spacing_source"] == "unknown (PixelSpacing [0.0, 0.0] is not a positive spacing)"


def test_a_voi_lut_sequence_and_no_spacing():
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = _file("vlut_04.dcm")  # a VOI LUT table instead of a window, and no PixelSpacing
    meta = {}
    grey = _grey(load_medical_image(path, meta))
    ds = pydicom.dcmread(path)
    table = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
    lut = np.asarray(apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds), dtype=np.float64)
    expected = (lut - table[0]) / (table[-1] - table[0]) * 255
    assert np.abs(grey - expected).max() <= 0.5 + 1e-9 and meta["windowing"] == "file VOI LUT"
    assert "pixel_spacing_mm" not in meta and meta["spacing_source"] == "unknown"
    meta = {}
    load_medical_image(path, meta, default_spacing_mm=0.25)  # the recipe's data.pixel_spacing_mm
    assert meta["pixel_spacing_mm"] == [0.25, 0.25] and meta["spacing_source"] == "recipe data.pixel_spacing_mm"


def test_a_compressed_file_decodes_to_the_same_pixels_as_its_uncompressed_twin():
    plain, jpeg_ls = {}, {}
    a = _grey(load_medical_image(_file("MR_small.dcm"), plain))
    b = _grey(load_medical_image(_file("MR_small_jpeg_ls_lossless.dcm"), jpeg_ls))  # needs pylibjpeg-libjpeg
    assert (a == b).all() and plain["windowing"] == jpeg_ls["windowing"]
    j2k = _grey(load_medical_image(_file("MR_small_jp2klossless.dcm"), {}))  # pylibjpeg-openjpeg
    assert (a == j2k).all()


def test_imager_pixel_spacing_is_used_and_named_when_pixel_spacing_is_missing(tmp_path):
    ds = pydicom.dcmread(_file("MR_small.dcm"))
    del ds.PixelSpacing
    ds.ImagerPixelSpacing = [0.3, 0.4]
    ds.save_as(tmp_path / "x.dcm")
    meta = {}
    load_medical_image(str(tmp_path / "x.dcm"), meta)
    assert meta["pixel_spacing_mm"] == [0.3, 0.4] and meta["spacing_source"] == "ImagerPixelSpacing (detector plane)"


def test_a_dicom_file_without_extension_is_found_by_its_content(tmp_path):
    bare = tmp_path / "IM000001"
    shutil.copy(_file("CT_small.dcm"), bare)
    (tmp_path / "notes").write_text("not an image")
    assert is_dicom(bare) and not is_dicom(tmp_path / "notes")
    a = _grey(load_medical_image(str(bare), {}))
    b = _grey(load_medical_image(_file("CT_small.dcm"), {}))
    assert (a == b).all()


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> str:
    import nibabel as nib

    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    return str(path)


def test_nifti_is_reoriented_whatever_the_file_order_and_shown_radiologically(tmp_path):
    """One physical volume written twice: RAS (canonical) and with x flipped and x/y swapped
    (a non-canonical affine). Both give the same slice, the same spacing, the marker where
    radiology shows it: the patient's right on the image's left, anterior at the top."""
    sx, sy, sz = 0.5, 0.8, 2.0
    vol = np.zeros((40, 30, 5))  # x (left -> right), y (posterior -> anterior), z
    vol[:, :, 2] = 10.0
    vol[35, 25, 2] = 1000.0  # far right, far anterior
    ras = _nifti(tmp_path / "ras.nii.gz", vol, np.diag([sx, sy, sz, 1.0]))
    # stored as (y, x, z) with x running right -> left: the affine maps index j to x = -sx * j + ...
    odd = np.transpose(vol[::-1, :, :], (1, 0, 2))
    affine = np.array([[0, -sx, 0, 39 * sx], [sy, 0, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1.0]])
    odd_path = _nifti(tmp_path / "odd.nii.gz", odd, affine)
    images, metas = [], []
    for path in (ras, odd_path):
        meta = {}
        images.append(_grey(load_medical_image(path, meta)))
        metas.append(meta)
    assert (images[0] == images[1]).all()
    assert metas[0]["pixel_spacing_mm"] == metas[1]["pixel_spacing_mm"] == pytest.approx([sy, sx])  # rows: y, cols: x
    row, col = np.unravel_index(images[0].argmax(), images[0].shape)
    assert (row, col) == (30 - 1 - 25, 40 - 1 - 35), "anterior at the top, the patient's right on the left"
    assert metas[0]["slice"] == 2 and metas[0]["spacing_source"] == "NIfTI header (canonical)"
    coronal = {"slice_axis": 1, "slice": 25}
    assert _grey(load_medical_image(ras, coronal)).shape == (5, 40) and coronal["pixel_spacing_mm"] == pytest.approx(
        [sz, sx]
    )


def test_an_out_of_range_slice_is_one_line(tmp_path):
    from medzoo.data.medical import MedicalImageError

    path = _nifti(tmp_path / "v.nii.gz", np.zeros((8, 8, 3)), np.eye(4))
    with pytest.raises(MedicalImageError, match=r"v.nii.gz: slice 3 outside the volume's 3 slices along axis 2"):
        load_medical_image(path, {"slice": 3})


def test_check_reports_each_medical_file_with_its_spacing_source():
    from conftest import run_medzoo

    args = [
        "check",
        "phantom-tiny",
        "--no-sample",
        "--set",
        "data.source=table",
        "--set",
        "data.path=fixture:ct-measure",
    ]
    out = run_medzoo(*args).stdout
    assert "medical images: 24 (spacing from: NIfTI header (canonical) 12, PixelSpacing 12)" in out
    assert "  train annotations-0: dicom, single frame, MONOCHROME2, windowing center 40 width 400, spacing" in out
    assert "  train annotations-1: nifti, slice 1 (axis 2), windowing center 40 width 400, spacing" in out
