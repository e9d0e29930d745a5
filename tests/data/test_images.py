"""2D image reading (PNG, JPEG, DICOM written here with pydicom) and the image-csv preparation."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medvlm.data.images import Unusable, discover_csv, image_png, prepare_samples, read_image, safe_id
from medvlm.errors import DataError

pydicom = pytest.importorskip("pydicom")


def write_dicom(path, stored, *, photometric="MONOCHROME2", slope=None, intercept=None, center=None,
                width=None, bits=16):
    """A minimal single-frame DICOM of uint16 ``stored`` pixels, written with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if center is not None:
        ds.WindowCenter, ds.WindowWidth = center, width
    ds.PixelData = np.ascontiguousarray(stored, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


STORED = np.array([[0, 1000], [2000, 3000]], dtype=np.uint16)


def test_dicom_rescale_and_window_by_hand(tmp_path):
    # value = 2 * stored - 100 -> [-100, 1900, 3900, 5900]; DICOM's window c=2900, w=4000: [900, 4899]
    path = write_dicom(tmp_path / "a.dcm", STORED, slope=2, intercept=-100, center=2900, width=4000)
    pixels = read_image(path)
    assert pixels.dtype == np.float32 and pixels.shape == (2, 2)
    np.testing.assert_allclose(pixels, [[0.0, 1000 / 3999], [3000 / 3999, 1.0]], atol=1e-7)


def test_monochrome1_is_inverted(tmp_path):
    two = read_image(write_dicom(tmp_path / "m2.dcm", STORED, center=1500, width=3000))
    one = read_image(write_dicom(tmp_path / "m1.dcm", STORED, photometric="MONOCHROME1", center=1500,
                                 width=3000))
    np.testing.assert_allclose(two, [[0.0, 1000 / 2999], [2000 / 2999, 1.0]], atol=1e-6)  # window [0, 2999]
    np.testing.assert_allclose(one, 1.0 - two, atol=1e-7)


def test_16_bit_dicom_keeps_levels_8_bit_would_merge(tmp_path):
    stored = np.array([[0, 1000, 1001, 65535]], dtype=np.uint16)  # no window: the image's own range
    pixels = read_image(write_dicom(tmp_path / "b.dcm", stored))
    assert pixels.dtype == np.float32
    assert pixels[0, 2] > pixels[0, 1]  # one stored level apart: still distinct
    assert np.floor(pixels[0, 1] * 255 + 0.5) == np.floor(pixels[0, 2] * 255 + 0.5)  # 8 bits would merge them
    np.testing.assert_allclose(pixels[0], stored[0] / 65535.0, atol=1e-7)


def test_a_dicom_without_suffix_is_recognised(tmp_path):
    path = write_dicom(tmp_path / "plain", STORED)
    np.testing.assert_allclose(read_image(path), STORED / 3000.0, atol=1e-7)


def test_pngs_and_jpegs(tmp_path):
    sixteen = np.array([[100, 200], [300, 500]], dtype=np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "s.png")
    pixels = read_image(tmp_path / "s.png")
    assert pixels.dtype == np.float32
    np.testing.assert_allclose(pixels, (sixteen - 100) / 400.0, atol=1e-7)
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    rgb[0, 1] = 255  # one white pixel: not a constant image
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "c.png")
    grey = read_image(tmp_path / "c.png")
    assert grey.dtype == np.uint8 and grey.shape == (4, 4)
    assert abs(int(grey[0, 0]) - 200 * 0.299) <= 1 and grey[0, 1] == 255  # luminance (PIL's "L")
    buf = io.BytesIO()
    Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1)), mode="L").save(buf, "JPEG")
    (tmp_path / "j.jpg").write_bytes(buf.getvalue())
    assert read_image(tmp_path / "j.jpg").shape == (16, 16)


def test_large_images_are_fitted(tmp_path):
    Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (600, 10)), mode="L").save(tmp_path / "w.png")
    assert read_image(tmp_path / "w.png").shape == (240, 1024)  # 600x2560 -> longest side 1024


@pytest.mark.parametrize("make, reason", [
    (lambda p: write_dicom(p / "c.dcm", np.full((3, 3), 7, dtype=np.uint16)), r"^constant image"),
    (lambda p: (p / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"junk"), r"^unreadable DICOM"),
    (lambda p: (p / "x.png").write_bytes(b"not a png"), r"^unreadable image"),
    (lambda p: write_dicom(p / "w.dcm", STORED, center=100000, width=10), r"^constant after windowing"),
])
def test_unusable_images_say_why(tmp_path, make, reason):
    make(tmp_path)
    [path] = list(tmp_path.iterdir())
    with pytest.raises(Unusable, match=reason):
        read_image(path)


def test_unusable_images_become_skipped_rows(tmp_path):
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4), mode="L").save(data / "img" / "ok.png")
    Image.fromarray(np.full((4, 4), 9, dtype=np.uint8), mode="L").save(data / "img" / "flat.png")
    (data / "img" / "bad.png").write_bytes(b"broken")
    (data / "labels.csv").write_text("path,label\nimg/ok.png,b\nimg/flat.png,a\nimg/bad.png,1\n")
    samples = discover_csv(data / "labels.csv", ("a", "b"))
    assert [(s.id, s.patient_id, s.label) for s in samples] == [("ok", "ok", 1), ("flat", "flat", 0),
                                                              ("bad", "bad", 1)]
    result = prepare_samples(samples, tmp_path / "work", lambda s: read_image(s.source))
    manifest = pd.read_csv(tmp_path / "work" / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(manifest["status"]) == ["ok", "skipped", "skipped"]
    assert manifest["reason"][1] == "constant image (every pixel 9)"
    assert manifest["reason"][2].startswith("unreadable image")
    assert (result.n_ok, result.n_skipped) == (1, 2)
    assert [r[0] for r in result.skipped()] == ["flat", "bad"]
    assert not (tmp_path / "work" / "images" / "flat.npy").exists()
    png = image_png(tmp_path / "work", "ok")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.arange(16).reshape(4, 4))
    assert image_png(tmp_path / "work", "ok", image="none") == b""


def test_missing_columns_name_the_csv(tmp_path):
    (tmp_path / "labels.csv").write_text("file,label\na.png,0\n")
    with pytest.raises(DataError, match=r"labels\.csv: missing column\(s\) \['path'\]; expected path,label"):
        discover_csv(tmp_path / "labels.csv", ("a", "b"))


def test_safe_ids():
    assert safe_id("files/p10/p10000032/s5/ab-c.jpg") == "files_p10_p10000032_s5_ab-c"
    assert safe_id("x y.PNG") == "x_y"


def test_a_csv_with_a_byte_order_mark_and_absolute_paths(tmp_path):
    Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4), mode="L").save(tmp_path / "x.png")
    text = f"\ufeffpath,label\n{tmp_path / 'x.png'},1\n"
    (tmp_path / "labels.csv").write_bytes(text.encode("utf-8"))
    [sample] = discover_csv(tmp_path / "labels.csv", ("a", "b"))
    assert sample.label == 1 and sample.source == str((tmp_path / "x.png").resolve())
