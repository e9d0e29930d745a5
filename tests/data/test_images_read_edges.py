"""Reading edges: EXIF orientation, transparency, DICOM VOI LUT functions (values computed by hand)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medvlm.data.images import read_image

pydicom = pytest.importorskip("pydicom")


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.uint8)  # 2 x 3
    img = Image.fromarray(pixels, mode="L")
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    img.save(tmp_path / "r.jpg", exif=exif, quality=100, subsampling=0)
    plain = read_image(_save_png(tmp_path / "p.png", pixels))
    rotated = read_image(tmp_path / "r.jpg")
    assert plain.shape == (2, 3) and rotated.shape == (3, 2)  # as a viewer shows it
    assert np.abs(rotated.astype(int) - np.rot90(pixels, k=-1).astype(int)).max() <= 3


def _save_png(path, pixels, mode="L"):
    Image.fromarray(pixels, mode=mode).save(path, format="PNG")
    return path


def test_transparent_pixels_are_composited_on_black(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = [[255, 0], [128, 255]]
    pixels = read_image(_save_png(tmp_path / "a.png", rgba, mode="RGBA"))
    assert pixels.dtype == np.uint8
    assert pixels.tolist() == [[200, 0], [100, 200]]  # 200 * 128/255 = 100.4 -> 100


def test_opaque_rgba_reads_as_before(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = [[10, 200], [90, 30]], 50, 70, 255
    expected = np.asarray(Image.fromarray(rgba[..., :3], mode="RGB").convert("L"))
    assert np.array_equal(read_image(_save_png(tmp_path / "o.png", rgba, mode="RGBA")), expected)


def _dicom(path, stored, **tags):
    """A minimal 16-bit MONOCHROME2 DICOM with ``tags`` set (pydicom)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "CR", "MONOCHROME2", 1
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.WindowCenter, ds.WindowWidth = tags.pop("center"), tags.pop("width")
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(stored, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


STORED = np.array([[0, 1000], [2000, 3000]], dtype=np.uint16)


def test_dicom_sigmoid_voi_function(tmp_path):
    pixels = read_image(_dicom(tmp_path / "s.dcm", STORED, center=1500, width=2000, VOILUTFunction="SIGMOID"))
    x = STORED.astype(np.float64)
    np.testing.assert_allclose(pixels, 1 / (1 + np.exp(-4 * (x - 1500) / 2000)), atol=1e-6)
    assert pixels[0, 0] == pytest.approx(1 / (1 + np.exp(3.0)), abs=1e-6)  # 0.0474


def test_dicom_linear_exact_voi_function(tmp_path):
    pixels = read_image(_dicom(tmp_path / "e.dcm", STORED, center=1500, width=2000,
                               VOILUTFunction="LINEAR_EXACT"))
    np.testing.assert_allclose(pixels, [[0.0, 0.25], [0.75, 1.0]], atol=1e-6)  # window [500, 2500]


def test_several_windows_use_the_first(tmp_path):
    path = _dicom(tmp_path / "m.dcm", STORED, center=[1500, 500], width=[3000, 100])
    np.testing.assert_allclose(read_image(path), [[0.0, 1000 / 2999], [2000 / 2999, 1.0]], atol=1e-6)


def test_images_of_an_earlier_reader_are_prepared_again(tmp_path):
    import json

    from medvlm.data.images import prepare_image_task
    from medvlm.tasks.yaml_task import load_yaml_task

    (tmp_path / "im").mkdir()
    for name in ("a", "b"):
        _save_png(tmp_path / "im" / f"{name}.png", np.array([[1, 2], [3, 4]], dtype=np.uint8))
    (tmp_path / "labels.csv").write_text("path,label\nim/a.png,0\nim/b.png,1\n")
    (tmp_path / "t.yaml").write_text("name: t\nclasses: [normal, pneumonia]\npositive: pneumonia\n"
                                     "source: {kind: image-csv, csv: labels.csv}\nprompt: \"0 or 1?\"\n")
    task = load_yaml_task(tmp_path / "t.yaml")
    first = prepare_image_task(tmp_path, tmp_path / "w", task=task, progress=False)
    assert first.rebuilt == [] and first.n_ok == 2
    journal = tmp_path / "w" / "prepare-journal.jsonl"
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert {e["options"]["reader"] for e in entries} == {2}
    for e in entries:  # a folder prepared before the reader version existed
        del e["options"]["reader"]
    journal.write_text("".join(json.dumps(e) + "\n" for e in entries))
    again = prepare_image_task(tmp_path, tmp_path / "w", task=task, progress=False)
    assert again.rebuilt == ["options changed: reader None -> 2"] * 2 and again.n_reused == 0
