"""Slices rendered from the original NIfTI volumes: orientation, selection, windowing, PNG bytes."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medvlm.data import slices as S
from medvlm.errors import ConfigError, DataError


def _write(path, data, affine):
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    return str(path)


@pytest.fixture()
def patient(tmp_path):
    """A 10x12x8 (x, y, z) canonical volume with a bright marker voxel, stored with a LAS affine
    (x flipped on disk) so reorientation matters."""
    rng = np.random.default_rng(0)
    canon = rng.uniform(10, 20, size=(10, 12, 8)).astype(np.float32)
    canon[8, 10, 3] = 100.0  # right (high x), anterior (high y), z = 3
    on_disk = canon[::-1]  # LAS storage
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    affine[0, 3] = 9.0
    row = {"patient_id": "P1", "orig_shape": "10x12x8",
           "tumour_x_min": 7, "tumour_x_max": 9, "tumour_y_min": 9, "tumour_y_max": 11,
           "tumour_z_min": 2, "tumour_z_max": 6}
    for m in ("t1", "t1ce", "t2", "flair"):
        row[m] = _write(tmp_path / f"{m}.nii.gz", on_disk * (1 + 0.1 * len(m)), affine)
    return row, canon


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_tumour_selection_and_radiological_orientation(patient):
    row, _ = patient
    axial = S.patient_slices(row, "axial")
    assert [s.slice_index for s in axial] == [2, 3, 4, 5, 6]
    img = _pixels(axial[1].png)  # z = 3
    assert img.shape == (12, 10)  # rows = y (anterior at top), cols = x
    # marker: x = 8 of 10 (patient's right -> image left: column 10-1-8 = 1), y = 10 (row 12-1-10 = 1)
    assert img[1, 1] == 255
    _, canon = patient
    assert np.unravel_index(S.display_slice(canon, "axial", 3).argmax(), (12, 10)) == (1, 1)
    coronal = S.patient_slices(row, "coronal")
    assert [s.slice_index for s in coronal] == [9, 10, 11]
    cimg = _pixels(coronal[1].png)  # y = 10
    assert cimg.shape == (8, 10)  # rows = z (superior at top), cols = x
    assert cimg[8 - 1 - 3, 1] == 255
    assert np.unravel_index(S.display_slice(canon, "coronal", 10).argmax(), (8, 10)) == (4, 1)
    sag = S.patient_slices(row, "sagittal")
    simg = _pixels(sag[1].png)  # x = 8
    assert simg.shape == (8, 12)  # rows = z, cols = y (anterior on the left)
    assert simg[4, 12 - 1 - 10] == 255
    assert np.unravel_index(S.display_slice(canon, "sagittal", 8).argmax(), (8, 12)) == (4, 1)
    # the PNG is the windowed display slice, nothing else
    data, _, (lo, hi) = S.load_canonical(row["flair"])
    assert np.array_equal(simg, S.window_to_uint8(S.display_slice(data, "sagittal", 8), lo, hi))


def test_selection_all_central_and_errors(patient):
    row, _ = patient
    assert len(S.patient_slices(row, "axial", selection="all")) == 8
    assert [s.slice_index for s in S.patient_slices(row, "axial", selection="central:2")] == [3, 4]
    assert [s.slice_index for s in S.patient_slices(row, "axial", selection="central:99")] == [2, 3, 4, 5, 6]
    assert S.count_slices(row, "axial", selection="central:2") == 2
    assert S.count_slices(row, "coronal") == 3
    with pytest.raises(ConfigError, match="--slices"):
        S.patient_slices(row, "axial", selection="middle")
    with pytest.raises(ConfigError, match="orientation"):
        S.patient_slices(row, "axail")
    bad = dict(row, flair="/nonexistent/flair.nii")
    with pytest.raises(DataError, match="patient P1: flair file"):
        S.patient_slices(bad, "axial")
    empty = dict(row, tumour_z_min="", tumour_z_max="")
    with pytest.raises(DataError, match="no tumour extent"):
        S.patient_slices(empty, "axial")


def test_png_bytes_deterministic_and_montage(patient):
    row, _ = patient
    a = S.patient_slices(row, "axial")
    S._CACHE.clear()
    b = S.patient_slices(row, "axial")
    assert [s.png for s in a] == [s.png for s in b]
    assert a[0].png[:8] == b"\x89PNG\r\n\x1a\n"
    montage = S.patient_slices(row, "axial", modalities="flair,t1ce,t2,t1")
    img = _pixels(montage[0].png)
    assert img.shape == (24, 20) and img.dtype == np.uint8
    with pytest.raises(ConfigError, match=r"--modalities: give 1 to 4 distinct .*; got \['flair', 'flair'\]"):
        S.parse_modalities("flair,flair")


def test_window_percentiles():
    assert S.window_to_uint8(np.array([1.0, 1.0]), 1.0, 1.0).tolist() == [0, 0]
    assert S.window_to_uint8(np.array([-5.0, np.nan, 15.0]), 0.0, 10.0).tolist() == [0, 0, 255]
