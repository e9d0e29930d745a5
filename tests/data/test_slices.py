"""Slices rendered from the original NIfTI volumes: orientation, selection, windowing, PNG bytes."""

from __future__ import annotations

import io
import warnings

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


# ---------------------------------------------------------------------------------- the selection
def test_parse_selection_and_modalities_messages():
    assert S.parse_selection("central:1") == ("central", 1) and S.parse_selection("all") == ("all", None)
    with pytest.raises(ConfigError, match=r"^--slices 'central:0': K must be at least 1$"):
        S.parse_selection("central:0")
    with pytest.raises(ConfigError, match=r"^--slices must be one of 'all', 'tumour', 'central:K'. Got "
                                          r"'middle' instead.$"):
        S.parse_selection("middle")
    assert S.parse_modalities(" FLAIR, t1ce ,") == ("flair", "t1ce") and S.parse_modalities(["t2"]) == ("t2",)
    for bad in ("", "flair,flair", "t1,t1ce,t2,flair,t1", "t1,t1ce,t2,flair,dwi"):
        with pytest.raises(ConfigError, match=r"^--modalities: give 1 to 4 distinct names of \['t1', 't1ce', "
                                              r"'t2', 'flair'\]; got "):
            S.parse_modalities(bad)
    with pytest.raises(ConfigError, match=r"^The 'modalities' parameter must be one of \['t1', 't1ce', 't2', "
                                          r"'flair'\]. Got 'dwi' instead."):
        S.parse_modalities("flair,dwi")


def _row(z_min, z_max, shape="10x12x8"):
    row = {"patient_id": "P1", "tumour_x_min": 1, "tumour_x_max": 2, "tumour_y_min": 3, "tumour_y_max": 4,
           "tumour_z_min": z_min, "tumour_z_max": z_max}
    if shape is not None:
        row["orig_shape"] = shape
    return row


@pytest.mark.parametrize(("z", "selection", "want"), [
    ((2, 6), "tumour", [2, 3, 4, 5, 6]),
    ((-2, 3), "tumour", [0, 1, 2, 3]),            # the extent is clipped to the volume
    ((5, 20), "tumour", [5, 6, 7]),
    ((0, 6), "central:1", [3]),                   # the middle slice
    ((0, 6), "central:2", [2, 3]),
    ((2, 6), "central:5", [2, 3, 4, 5, 6]),       # K = the whole range
    ((2, 6), "central:6", [2, 3, 4, 5, 6]),       # K beyond it: the whole range
    ((2, 6), "all", list(range(8))),
])
def test_slice_indices_and_count_agree(z, selection, want):
    row = _row(*z)
    assert S.slice_indices(row, "axial", selection, 8) == want
    assert S.count_slices(row, "axial", selection=selection) == len(want)


def test_count_slices_from_the_manifest_alone():
    assert [S.count_slices(_row(2, 6), o, selection="all") for o in S.ORIENTATIONS] == [8, 12, 10]
    assert S.count_slices(_row(2, 6, shape=None), "axial", selection="all") is None  # size unknown
    assert S.count_slices(_row(5, 20, shape=None), "axial") == 16  # not clipped without a size
    assert S.count_slices(_row(10, 12), "axial") == 0  # the extent lies outside the volume
    assert S.count_slices(_row("", ""), "axial") == 0  # no tumour in this plane
    assert S.count_slices(_row(0, 3), "coronal", selection="central:1") == 1


@pytest.mark.parametrize("missing", ["", " ", "nan", "<NA>", None, np.nan])
def test_an_empty_extent_is_no_extent(missing):
    row = _row(missing, 3)
    assert S.count_slices(row, "axial") == 0
    with pytest.raises(DataError, match=r"^patient P1: manifest has no tumour extent along z \(empty "
                                        r"mask\?\); use --slices all$"):
        S.slice_indices(row, "axial", "tumour", 8)


def test_extent_and_manifest_errors_name_the_patient():
    with pytest.raises(DataError, match=r"^patient P1: tumour extent \(10, 12\) outside the volume \(size "
                                        r"8\)$"):
        S.slice_indices(_row(10, 12), "axial", "tumour", 8)
    with pytest.raises(DataError, match="^manifest row of patient P1: tumour_z_min/max not integers$"):
        S.slice_indices(_row("two", 3), "axial", "tumour", 8)
    with pytest.raises(DataError, match="^manifest row of patient P1: no column 'tumour_y_min'$"):
        S.slice_indices({"patient_id": "P1"}, "coronal", "tumour", 8)
    with pytest.raises(DataError, match=r"^manifest row of patient \?: no column 'tumour_x_min'$"):
        S.slice_indices({}, "sagittal", "tumour", 8)


def test_patient_slices_errors_and_fields(patient, tmp_path):
    row, _ = patient
    with pytest.raises(ConfigError, match=r"^The 'orientation' parameter must be one of \['axial', "
                                          r"'coronal', 'sagittal'\]. Got 'axail' instead."):
        S.patient_slices(row, "axail")
    with pytest.raises(DataError, match=r"^patient P1: axial slice 8 is outside 0..7$"):
        S.patient_slices(row, "axial", indices=[8])
    picked = S.patient_slices(row, "axial", indices=[7, 0])
    assert [(s.patient_id, s.orientation, s.slice_index) for s in picked] == [("P1", "axial", 7),
                                                                              ("P1", "axial", 0)]
    small = _write(tmp_path / "small.nii.gz", np.ones((4, 4, 4)), np.eye(4))
    with pytest.raises(DataError, match=r"^patient P1: modalities \['flair', 't1'\] have different shapes "
                                        r"\[\(4, 4, 4\), \(10, 12, 8\)\]$"):
        S.patient_slices(dict(row, t1=small), "axial", modalities="flair,t1")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file")
    with pytest.raises(DataError, match=rf"^patient P1: cannot read {broken} \("):
        S.patient_slices(dict(row, flair=str(broken)), "axial")
    with pytest.raises(DataError, match=rf"^patient \?: cannot read {broken} \("):
        S.load_canonical(broken)


def test_unit_images_plans_patients_or_exactly_the_units(patient):
    import pandas as pd

    row, _ = patient
    manifest = pd.DataFrame([row, dict(row, patient_id="P0")]).set_index("patient_id", drop=False)
    total, images = S.unit_images(manifest, pd.DataFrame({"patient_id": ["P1", "P0"]}),
                                  orientations=["coronal", "axial"], selection="central:2",
                                  modalities=("flair", "t1"), unit="patient")
    keys = [key for key, _ in images]
    assert total == len(keys) == 8  # 2 patients x (2 coronal + 2 axial), from the manifest
    assert keys[:4] == [("P1", "coronal", 9), ("P1", "coronal", 10), ("P1", "axial", 3), ("P1", "axial", 4)]
    S._CACHE.clear()
    _, images = S.unit_images(manifest, pd.DataFrame({"patient_id": ["P1"]}), orientations=["axial"],
                              selection="central:1", modalities=("flair", "t1"), unit="patient")
    (_, png), = list(images)
    assert _pixels(png).shape == (24, 20)  # the modalities asked for: a 2x2 montage
    nosize = manifest.drop(columns="orig_shape")
    total, images = S.unit_images(nosize, pd.DataFrame({"patient_id": ["P1"]}), orientations=["axial"],
                                  selection="all", modalities=("flair",), unit="patient")
    assert total is None and len(list(images)) == 8  # unknown up front, every slice rendered
    units = pd.DataFrame({"patient_id": ["P1", "P0", "P1"], "orientation": ["axial", "axial", "coronal"],
                          "slice_index": [5, 1, 0]})
    total, images = S.unit_images(manifest, units, orientations=["sagittal"], selection="tumour",
                                  modalities=("flair",), unit="slice")
    # grouped by patient and orientation in the order they first appear
    assert total == 3 and [key for key, _ in images] == [("P1", "axial", 5), ("P0", "axial", 1),
                                                         ("P1", "coronal", 0)]


# ---------------------------------------------------------------------------------- loading, rendering
def test_load_canonical_float32_window_and_4d(tmp_path):
    data = np.zeros((6, 5, 4), dtype=np.int16)
    data[1:5, 1:4, 1:3] = np.arange(1, 25, dtype=np.int16).reshape(4, 3, 2)
    path = tmp_path / "int.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), str(path))
    vol, zooms, window = S.load_canonical(path)
    assert vol.dtype == np.float32 and vol.shape == (6, 5, 4) and zooms == (2.0, 2.0, 3.0)
    assert window == tuple(np.percentile(np.arange(1, 25), [0.5, 99.5]))  # of the non-zero voxels only
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(data[..., None].astype(np.float32), np.eye(4)), str(four))
    vol4, zooms4, _ = S.load_canonical(four)
    assert vol4.shape == (6, 5, 4) and len(zooms4) == 3
    two = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4, 2), np.float32), np.eye(4)), str(two))
    with pytest.raises(DataError, match=rf"^patient P9: {two} is not a 3D volume \(shape \(6, 5, 4, 2\)\)$"):
        S.load_canonical(two, "P9")
    blank = tmp_path / "blank.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4)), str(blank))
    assert S.load_canonical(blank)[2] == (0.0, 0.0)


def test_load_canonical_keeps_the_last_eight_volumes(tmp_path):
    S._CACHE.clear()
    paths = [_write(tmp_path / f"v{i}.nii.gz", np.full((2, 2, 2), i + 1.0), np.eye(4)) for i in range(9)]
    for p in paths:
        S.load_canonical(p)
    S.load_canonical(paths[1])  # used again: the newest
    assert list(S._CACHE) == [*paths[2:], paths[1]]


def test_window_edges():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flat = S.window_to_uint8(np.array([1.0, 2.0]), 1.0, 1.0)
    assert flat.tolist() == [0, 0] and flat.dtype == np.uint8
    assert S.window_to_uint8(np.array([np.nan, 0.0, 10.0]), -10.0, 10.0).tolist() == [0, 128, 255]


@pytest.mark.parametrize(("orientation", "zooms", "size"), [
    ("axial", (1.0, 2.0, 5.0), (6, 8)),      # display columns x (1 mm), rows y (2 mm): rows doubled
    ("axial", (2.0, 1.0, 5.0), (12, 4)),
    ("coronal", (1.0, 9.0, 3.0), (6, 12)),   # columns x, rows z
    ("sagittal", (9.0, 0.5, 1.0), (6, 8)),   # columns y (0.5 mm), rows z (1 mm)
    ("axial", (1.0, 1.0, 5.0), (6, 4)),      # square already
    ("axial", (1.0, 1.0004, 5.0), (6, 4)),   # within 1e-3 mm: square
    ("axial", (0.0, 1.0, 1.0), (6, 4)),      # a zero voxel size: left alone
])
def test_square_pixels(orientation, zooms, size):
    image = Image.fromarray(np.arange(24, dtype=np.uint8).reshape(4, 6) * 10, mode="L")
    out = S._square_pixels(image, orientation, zooms)
    assert out.size == size
    if size == image.size:
        assert out is image  # not resampled at all
    else:
        assert np.array_equal(np.asarray(out), np.asarray(image.resize(size, Image.Resampling.BILINEAR)))


def test_square_pixels_keeps_at_least_one_pixel():
    image = Image.fromarray(np.zeros((1, 1), np.uint8), mode="L")
    assert S._square_pixels(image, "axial", (1.0, 3.0, 1.0)).size == (1, 3)
    assert S._square_pixels(image, "axial", (3.0, 1.0, 1.0)).size == (3, 1)


def test_png_settings_are_fixed_so_cache_keys_stay_valid():
    image = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 3, mode="L")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    assert S._png_bytes(image) == buffer.getvalue()


def test_montage_layout():
    from PIL import ImageDraw, ImageFont

    # tiles larger than the label boxes, so every edge shows; the second one smaller than its cell
    tiles = [Image.new("L", size, value) for size, value in [((40, 24), 60), ((29, 19), 90), ((36, 30), 120)]]
    labels = ["T1", "T1ce", "T2"]
    canvas = S._montage(tiles, labels)
    want = Image.new("L", (80, 60), 0)  # 2x2 cells of the largest width and height, the empty cell black
    draw = ImageDraw.Draw(want)
    for (x0, y0), tile, label in zip([(0, 0), (40, 0), (0, 30)], tiles, labels, strict=True):
        want.paste(tile, (x0 + (40 - tile.width) // 2, y0 + (30 - tile.height) // 2))  # centred in its cell
        draw.rectangle((x0 + 2, y0 + 2, x0 + 8 + 7 * len(label), y0 + 16), fill=0)
        draw.text((x0 + 5, y0 + 4), label, fill=255, font=ImageFont.load_default())
    assert canvas.size == (80, 60) and np.array_equal(np.asarray(canvas), np.asarray(want))


def test_tumour_mask_is_the_canonical_seg_above_zero_and_its_refusals(patient, tmp_path):
    row, canon = patient
    seg = np.zeros((10, 12, 8), np.float32)
    seg[8, 10, 3], seg[7, 9, 2], seg[1, 1, 1] = 4, 2, 1  # BraTS labels 1, 2, 4 are all tumour
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    affine[0, 3] = 9.0
    path = _write(tmp_path / "seg.nii.gz", seg[::-1], affine)  # LAS on disk, like the images
    mask = S._tumour_mask(dict(row, seg=path), "P1", canon.shape)
    assert mask.dtype == bool and mask.shape == (10, 12, 8)
    assert sorted(zip(*np.nonzero(mask), strict=True)) == [(1, 1, 1), (7, 9, 2), (8, 10, 3)]
    for missing in ("", str(tmp_path / "nope.nii.gz")):
        with pytest.raises(DataError, match=rf"^patient P1: seg file {missing!r} does not exist "
                                            r"\(--image tumour-masked needs the tumour mask\)$"):
            S._tumour_mask(dict(row, seg=missing), "P1", canon.shape)
    with pytest.raises(DataError, match=r"^patient P1: seg file None does not exist"):
        S._tumour_mask(dict(row, seg=None), "P1", canon.shape)
    with pytest.raises(DataError, match=rf"^patient P1: seg {path} has shape \(10, 12, 8\), the image "
                                        r"\(10, 12, 9\)$"):
        S._tumour_mask(dict(row, seg=path), "P1", (10, 12, 9))
    broken = tmp_path / "broken_seg.nii.gz"
    broken.write_bytes(b"not a nifti file")
    with pytest.raises(DataError, match=rf"^patient P1: cannot read {broken} \("):
        S._tumour_mask(dict(row, seg=str(broken)), "P1", canon.shape)


# ------------------------------------------------------------------ hand-written held-out bugs (issue 20)
@pytest.mark.parametrize("selection", ["central:3x", "central:3,4", "central:", "Central:3", " all"])
def test_a_selection_with_anything_around_it_is_refused(selection):
    with pytest.raises(ConfigError, match=r"^--slices must be one of 'all', 'tumour', 'central:K'\. Got "):
        S.parse_selection(selection)


def test_unit_images_renders_with_the_control_artifact_and_seed_it_is_given(patient):
    import pandas as pd

    pytest.importorskip("torchio")
    row, _ = patient
    manifest = pd.DataFrame([row]).set_index("patient_id", drop=False)
    units = pd.DataFrame({"patient_id": ["P1"]})

    def pngs(**kw):
        _, images = S.unit_images(manifest, units, orientations=["axial"], selection="central:2",
                                  modalities=("flair",), unit="patient", **kw)
        return [png for _, png in images]

    def direct(**kw):
        return [s.png for s in S.patient_slices(row, "axial", selection="central:2", modalities="flair",
                                                **kw)]

    assert pngs() == direct() and pngs(image="blank") == direct(image="blank") != direct()
    spiked = pngs(artifact="spike:0.8", seed=3)
    assert spiked == direct(artifact="spike:0.8", seed=3) != direct()
    assert spiked != direct(artifact="spike:0.8", seed=4)
    assert pngs(artifact="spike:0.8") == direct(artifact="spike:0.8", seed=0)  # the default seed is 0
    units_s = pd.DataFrame({"patient_id": ["P1"], "orientation": ["axial"], "slice_index": [4]})
    _, images = S.unit_images(manifest, units_s, orientations=["axial"], selection="tumour",
                              modalities=("flair",), unit="slice", artifact="spike:0.8", seed=3)
    assert [png for _, png in images] == [s.png for s in S.patient_slices(
        row, "axial", modalities="flair", indices=[4], artifact="spike:0.8", seed=3)]
