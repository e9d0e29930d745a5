"""image-csv hygiene: unique ids, one file under two names, NA patients, CSV dialects, notes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from medvlm.cli import invoke
from medvlm.data.images import discover_csv, prepare_samples, read_file_sample
from medvlm.errors import DataError

CLASSES = ("normal", "pneumonia")


def _png(path, value, size=(4, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full(size, value, dtype=np.uint8)
    pixels[0, 0] = 255 - value  # not constant
    Image.fromarray(pixels, mode="L").save(path, format="PNG")
    return path


def _csv(folder, text, name="labels.csv"):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------- #1 unique ids
def test_suffixed_id_never_takes_another_images_id_and_pixels_stay_apart(tmp_path):
    for name, value in (("x-4.png", 10), ("x.png", 20), ("x.jpg", 30)):
        if name.endswith(".jpg"):
            pixels = np.full((8, 8), value, np.uint8)
            pixels[:, :4] = 200
            Image.fromarray(pixels, mode="L").save(tmp_path / "im" / name, format="JPEG", quality=100)
        else:
            _png(tmp_path / "im" / name, value)
    csv = _csv(tmp_path, "path,label\nim/x-4.png,0\nim/x.png,1\nim/x.jpg,0\n")
    samples = discover_csv(csv, CLASSES)
    assert [s.id for s in samples] == ["x-4", "x", "x.jpg"]  # the first two as before: caches stay valid
    result = prepare_samples(samples, tmp_path / "w", read_file_sample)
    assert [r["id"] for r in result.rows] == ["x-4", "x", "x.jpg"]
    assert np.load(tmp_path / "w" / "images" / "x-4.npy")[1, 1] == 10  # not overwritten by x.jpg
    assert abs(int(np.load(tmp_path / "w" / "images" / "x.jpg.npy")[1, 6]) - 30) <= 3


def test_extensionless_dicom_names_keep_apart(tmp_path):
    names = ["1.2.840.113619.195.504", "1.2.840.113619.195.505", "series/IM.000001", "series/IM.000002"]
    for i, name in enumerate(names):
        _png(tmp_path / name, 10 * i)
    samples = discover_csv(_csv(tmp_path, "path,label\n" + "".join(f"{n},0\n" for n in names)), CLASSES)
    ids = [s.id for s in samples]
    assert ids == ["1.2.840.113619.195", "1.2.840.113619.195.505", "series_IM", "series_IM.000002"]


def test_ids_differing_only_in_case_are_kept_apart(tmp_path):
    _png(tmp_path / "im" / "A.png", 1)
    _png(tmp_path / "im" / "a.png", 2)
    samples = discover_csv(_csv(tmp_path, "path,label\nim/A.png,0\nim/a.png,1\n"), CLASSES)
    assert [s.id for s in samples] == ["A", "a.png"]


def test_non_colliding_ids_are_unchanged(tmp_path):
    for rel in ("im/p1/a b.png", "im/p2/c.png"):
        _png(tmp_path / rel, 5)
    samples = discover_csv(_csv(tmp_path, "path,label\nim/p1/a b.png,0\nim/p2/c.png,1\n"), CLASSES)
    assert [s.id for s in samples] == ["im_p1_a_b", "im_p2_c"]


def test_prepare_refuses_duplicate_ids_from_any_source(tmp_path):
    from medvlm.data.images import ImageSample

    samples = [ImageSample("a", "a", 0, "x"), ImageSample("A", "A", 1, "y")]
    with pytest.raises(DataError, match=r"image ids must be unique \(case ignored\); 'a' is given to 2"):
        prepare_samples(samples, tmp_path / "w", read_file_sample)


# ------------------------------------------------------------------- #8 one file, two spellings; NA
@pytest.mark.parametrize("second", ["im/./x.png", "im//x.png", "im/sub/../x.png", "link.png"])
def test_one_file_under_two_names_is_refused_naming_both_lines(tmp_path, second):
    _png(tmp_path / "im" / "x.png", 9)
    (tmp_path / "im" / "sub").mkdir()
    os.symlink("im/x.png", tmp_path / "link.png")
    csv = _csv(tmp_path, f"path,label,patient_id\nim/x.png,0,P1\n{second},1,P2\n")
    with pytest.raises(DataError, match=rf"line 3: image {second} is the file im/x\.png of line 2 "
                                        r"\(listed twice under two names\)"):
        discover_csv(csv, CLASSES)


def test_empty_or_na_patient_ids_make_own_patients_with_a_counted_note(tmp_path):
    for i in range(4):
        _png(tmp_path / "im" / f"{i}.png", i)
    csv = _csv(tmp_path, "path,label,patient_id\nim/0.png,0,NA\nim/1.png,1,\nim/2.png,0,P7\n"
                         "im/3.png,1,n/a\n")
    notes: list[str] = []
    samples = discover_csv(csv, CLASSES, notes=notes)
    assert [s.patient_id for s in samples] == ["0", "1", "P7", "3"]
    assert notes == [f"{csv}: 3 image(s) with an empty or NA patient_id (line 2, 3, 5): each is its "
                     "own patient"]


# ------------------------------------------------------------------------------- #16 CSV dialects
@pytest.mark.parametrize("sep", [";", "\t"])
def test_semicolon_and_tab_separated_csvs_are_read(tmp_path, sep):
    _png(tmp_path / "im" / "a.png", 1)
    _png(tmp_path / "im" / "b.png", 2)
    csv = _csv(tmp_path, f"path{sep}label\nim/a.png{sep}pneumonia\nim/b.png{sep}0\n")
    assert [(s.id, s.label) for s in discover_csv(csv, CLASSES)] == [("a", 1), ("b", 0)]


def test_a_header_without_the_columns_names_the_separator_seen(tmp_path):
    csv = _csv(tmp_path, "file;class\nim/a.png;0\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['path', 'label'\]; expected path,label"
                                        r"\[,patient_id\] \(the header 'file;class' holds no comma but a "
                                        r"semicolon"):
        discover_csv(csv, CLASSES)


def test_header_case_backslashes_blank_lines_and_line_numbers(tmp_path):
    _png(tmp_path / "im" / "a.png", 1)
    csv = _csv(tmp_path, "Path,Label,Patient_ID\n\nim\\a.png,1,P1\n\nim\\b.png,0,P2\n")
    with pytest.raises(DataError, match=r"labels\.csv: line 5: image file im/b\.png does not exist"):
        discover_csv(csv, CLASSES)
    _png(tmp_path / "im" / "b.png", 2)
    samples = discover_csv(csv, CLASSES)
    assert [(s.id, s.label, s.patient_id) for s in samples] == [("a", 1, "P1"), ("b", 0, "P2")]


def test_a_row_with_an_extra_field_names_its_line(tmp_path):
    _png(tmp_path / "im" / "a.png", 1)
    csv = _csv(tmp_path, "path,label\nim/a.png,0\n\nim/a.png,label,extra\n")
    with pytest.raises(DataError, match=r"labels\.csv: line 4: 3 fields, but the header has 2 "
                                        r"\(path,label\); quote a value that holds the comma$"):
        discover_csv(csv, CLASSES)


def test_a_csv_in_a_subfolder_may_refer_to_images_elsewhere_in_data(tmp_path):
    _png(tmp_path / "images" / "a.png", 1)
    _png(tmp_path / "b.png", 2)
    csv = _csv(tmp_path, "path,label\n../images/a.png,0\n../b.png,1\n", name="meta/labels.csv")
    assert [s.id for s in discover_csv(csv, CLASSES, root=tmp_path)] == ["images_a", "b"]
    with pytest.raises(DataError, match=r"line 2: image path \.\./images/a\.png leads outside the CSV's "
                                        r"folder"):
        discover_csv(csv, CLASSES)  # root: the CSV's folder
    out = _csv(tmp_path, "path,label\n../../x.png,0\n", name="meta/out.csv")
    with pytest.raises(DataError, match=r"line 2: image path \.\./\.\./x\.png leads outside the data "
                                        r"folder"):
        discover_csv(out, CLASSES, root=tmp_path)


# ------------------------------------------------------------------------------ #11 notes at prepare
def test_prepare_notes_split_column_na_patients_and_empty_classes(tmp_path, capsys):
    data = tmp_path / "data"
    for i in range(2):
        _png(data / "im" / f"{i}.png", 40 * i)
    _csv(data, "path,label,patient_id,split\nim/0.png,0,NA,train\nim/1.png,0,P1,test\n")
    (data / "t.yaml").write_text("name: three\nclasses: [normal, pneumonia, effusion]\n"
                                 "source: {kind: image-csv, csv: labels.csv}\n"
                                 "prompt: \"Which? normal (0), pneumonia (1), effusion (2). "
                                 "Choice: <0-2>\"\n")
    assert invoke(["prepare", str(data), "--out", str(tmp_path / "w"), "--task", str(data / "t.yaml")]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("medvlm: warning:")]
    csv = data / "labels.csv"
    assert err == [
        f"medvlm: warning: {csv}: column 'split' is ignored (an image-csv cohort is split by patient with "
        "`medvlm split`)",
        f"medvlm: warning: {csv}: 1 image(s) with an empty or NA patient_id (line 2): each is its own "
        "patient",
        f"medvlm: warning: {csv}: class 'pneumonia' (label 1) has no image",
        f"medvlm: warning: {csv}: class 'effusion' (label 2) has no image"]
