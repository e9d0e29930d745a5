"""Rerun-safe image preparation (`medvlm prepare DATA --task FILE.yaml`): a rerun reuses finished images
without decoding them, re-does changed ones, an interrupted run resumes to the same bytes, and
``--workers 2`` writes the same bytes as one process."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

import medvlm.data.images as images_mod
from medvlm.cli import invoke
from medvlm.data.image_prepare import JOURNAL_FILE, prepare_samples, resolve_workers
from medvlm.data.image_read import Unusable, read_image
from medvlm.data.images import discover_csv, prepare_image_task
from medvlm.errors import ConfigError
from medvlm.tasks import get_task

TASK = """name: tiny-cxr
classes: [normal, lesion]
positive: lesion
source: {kind: image-csv, csv: labels.csv}
prompt: "0 or 1? Choice:"
"""
N_OK = 6  # usable images of the cohort below (plus one constant and one unreadable: skipped)


def cohort(data):
    """Six 8-bit PNGs (one 40x30, resized at max_side 16), one 16-bit PNG, a constant and a broken
    file, listed in ``labels.csv``, with the task file ``task.yaml``."""
    rng = np.random.default_rng(0)
    (data / "img").mkdir(parents=True)
    lines = ["path,label,patient_id"]
    for i in range(5):
        shape = (40, 30) if i == 0 else (12, 10)
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(data / "img" / f"a{i}.png")
        lines.append(f"img/a{i}.png,{i % 2},p{i // 2}")
    Image.fromarray(rng.integers(0, 60000, (9, 7)).astype(np.uint16)).save(data / "img" / "deep.png")
    Image.fromarray(np.full((6, 6), 9, dtype=np.uint8), mode="L").save(data / "img" / "flat.png")
    (data / "img" / "bad.png").write_bytes(b"broken")
    lines += ["img/deep.png,lesion,p9", "img/flat.png,0,p9", "img/bad.png,1,p9"]
    (data / "labels.csv").write_text("\n".join(lines) + "\n")
    (data / "task.yaml").write_text(TASK)
    return data


@pytest.fixture
def data(tmp_path):
    return cohort(tmp_path / "data")


def snapshot(work):
    """Every output file but the journal (whose stamps hold modification times): {name: bytes}."""
    return {str(p.relative_to(work)): p.read_bytes() for p in sorted(work.rglob("*"))
            if p.is_file() and p.name != JOURNAL_FILE}


def prepare_cli(data, work, *extra):
    return invoke(["prepare", str(data), "--out", str(work), "--task", str(data / "task.yaml"), *extra])


@pytest.fixture
def decodes(monkeypatch):
    """Count the images decoded by `medvlm prepare` (in this process): ``{source path: calls}``."""
    calls: dict[str, int] = {}

    def counting(path, **kwargs):
        calls[str(path)] = calls.get(str(path), 0) + 1
        return read_image(path, **kwargs)

    monkeypatch.setattr(images_mod, "read_image", counting)
    return calls


def test_a_rerun_reuses_every_image_without_decoding(data, tmp_path, decodes, capsys):
    work = tmp_path / "work"
    assert prepare_cli(data, work) == 0
    assert sum(decodes.values()) == 8 and set(decodes.values()) == {1}
    first = snapshot(work)
    assert capsys.readouterr().out.startswith(f"{N_OK} images prepared (0 reused), 2 skipped")
    decodes.clear()
    assert prepare_cli(data, work) == 0
    out, err = capsys.readouterr()
    assert decodes == {}  # neither the usable nor the skipped images are read again
    assert out.startswith(f"{N_OK} images prepared ({N_OK} reused), 2 skipped")
    assert "prepared again" not in err
    assert "skipped flat: constant image (every pixel 9)" in err and "skipped bad: unreadable image" in err
    assert snapshot(work) == first  # same manifest, same images, files untouched
    journal = [json.loads(line) for line in (work / JOURNAL_FILE).read_text().splitlines()]
    assert [e["id"] for e in journal] == ["a0", "a1", "a2", "a3", "a4", "deep", "flat", "bad"]


def test_a_changed_source_or_a_lost_image_is_prepared_again(data, tmp_path, decodes, capsys):
    work = tmp_path / "work"
    assert prepare_cli(data, work) == 0
    before = snapshot(work)
    new = np.arange(120, dtype=np.uint8).reshape(12, 10)
    Image.fromarray(new, mode="L").save(data / "img" / "a3.png")  # new content, new size and time
    (work / "images" / "a1.npy").unlink()
    Image.fromarray(np.arange(36, dtype=np.uint8).reshape(6, 6), mode="L").save(data / "img" / "flat.png")
    capsys.readouterr()
    decodes.clear()
    assert prepare_cli(data, work) == 0
    out, err = capsys.readouterr()
    assert sorted(os.path.basename(p) for p in decodes) == ["a1.png", "a3.png", "flat.png"]
    assert out.startswith(f"{N_OK + 1} images prepared ({N_OK - 2} reused), 1 skipped")
    assert "prepared again: 2 source file changed; 1 image missing" in err
    after = snapshot(work)
    assert np.array_equal(np.load(work / "images" / "a3.npy"), new)
    assert after["images/a1.npy"] == before["images/a1.npy"]  # rebuilt to the same bytes
    assert {k for k in before if before[k] != after.get(k)} == {"manifest.csv", "images/a3.npy"}


def test_changed_settings_prepare_every_image_again(data, tmp_path, decodes):
    work, task = tmp_path / "work", get_task(str(data / "task.yaml"))
    prepare_image_task(data, work, task=task, progress=False)
    assert np.load(work / "images" / "a0.npy").shape == (40, 30)
    decodes.clear()
    result = prepare_image_task(data, work, task=task, progress=False, max_side=16)
    assert sum(decodes.values()) == 8 and result.n_reused == 0
    assert result.rebuilt == ["options changed: max_side 1024 -> 16"] * 8  # skipped images tried again too
    assert np.load(work / "images" / "a0.npy").shape == (16, 12)
    decodes.clear()
    assert prepare_image_task(data, work, task=task, progress=False, max_side=16).n_reused == N_OK
    assert decodes == {}


def test_an_interrupted_run_resumes_to_the_bytes_of_an_uninterrupted_one(data, tmp_path, decodes):
    task = get_task(str(data / "task.yaml"))
    whole = prepare_image_task(data, tmp_path / "whole", task=task, progress=False)
    calls = {"n": 0}

    def crash_on_fourth(path, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return read_image(path, **kwargs)

    work = tmp_path / "work"
    images_mod.read_image, original = crash_on_fourth, images_mod.read_image
    try:
        with pytest.raises(KeyboardInterrupt):
            prepare_image_task(data, work, task=task, progress=False)
    finally:
        images_mod.read_image = original
    assert not (work / "manifest.csv").exists()  # the manifest comes at the end only
    journal = (work / JOURNAL_FILE).read_text().splitlines()
    assert [json.loads(line)["id"] for line in journal] == ["a0", "a1", "a2"]  # finished work is kept
    with open(work / JOURNAL_FILE, "a") as fh:
        fh.write('{"id": "a3", "status": "o')  # a line torn by the kill: ignored
    decodes.clear()
    resumed = prepare_image_task(data, work, task=task, progress=False)
    assert sorted(os.path.basename(p) for p in decodes) == ["a3.png", "a4.png", "bad.png", "deep.png",
                                                            "flat.png"]
    assert resumed.n_reused == 3 and resumed.rebuilt == []
    assert snapshot(work) == snapshot(tmp_path / "whole")
    assert resumed.rows == whole.rows


def test_two_workers_write_the_bytes_of_one(data, tmp_path, capsys):
    assert prepare_cli(data, tmp_path / "one") == 0
    assert prepare_cli(data, tmp_path / "two", "--workers", "2") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith(f"{N_OK} images prepared (0 reused), 2 skipped")
    one, two = snapshot(tmp_path / "one"), snapshot(tmp_path / "two")
    assert len([k for k in one if k.startswith("images/")]) == N_OK
    assert one == two
    ids = [json.loads(line)["id"] for line in (tmp_path / "two" / JOURNAL_FILE).read_text().splitlines()]
    assert ids == ["a0", "a1", "a2", "a3", "a4", "deep", "flat", "bad"]  # compacted in source order
    assert prepare_cli(data, tmp_path / "two", "--workers", "auto") == 0  # and it reuses them
    assert capsys.readouterr().out.startswith(f"{N_OK} images prepared ({N_OK} reused)")


def test_a_skip_from_the_environment_is_tried_again(data, tmp_path):
    samples = discover_csv(data / "labels.csv", ("normal", "lesion"))[:2]
    calls = []

    def no_reader(sample):
        calls.append(sample.id)
        raise Unusable("DICOM needs pydicom", lasting=False)

    first = prepare_samples(samples, tmp_path / "w", no_reader)
    assert first.skipped() == [("a0", "DICOM needs pydicom"), ("a1", "DICOM needs pydicom")]
    second = prepare_samples(samples, tmp_path / "w", lambda s: read_image(s.source))
    assert calls == ["a0", "a1"] and (second.n_ok, second.n_skipped) == (2, 0)
    assert second.rebuilt == ["skipped before, tried again"] * 2


@pytest.mark.parametrize("value, message", [
    ("0", "--workers must be a number of processes (1 or more) or 'auto', got '0'"),
    ("two", "--workers must be a number of processes (1 or more) or 'auto', got 'two'"),
])
def test_bad_workers_are_one_line_exit_2(data, tmp_path, capsys, value, message):
    assert prepare_cli(data, tmp_path / "w", "--workers", value) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="or 'auto'"):
        resolve_workers(-1)
    assert resolve_workers("auto") == len(os.sched_getaffinity(0))


def test_a_medmnist_rerun_reuses_its_images_until_the_file_changes(tmp_path, capsys):
    rng = np.random.default_rng(1)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (3, 5, 5), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array([[0], [1], [1]])
    np.savez(tmp_path / "m.npz", **arrays)
    (tmp_path / "task.yaml").write_text(TASK.replace("{kind: image-csv, csv: labels.csv}",
                                                     "{kind: medmnist, npz: m.npz}"))
    args = ["prepare", str(tmp_path), "--out", str(tmp_path / "w"), "--task", str(tmp_path / "task.yaml")]
    assert invoke(args) == 0 and invoke(args) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("9 images prepared (9 reused), 0 skipped")
    arrays["val_images"][2] = 4  # now constant: skipped
    np.savez(tmp_path / "m.npz", **arrays)
    os.utime(tmp_path / "m.npz", ns=(1, 1))  # a new stamp even within the clock's resolution
    assert invoke(args) == 0
    out, err = capsys.readouterr()
    assert out.startswith("8 images prepared (0 reused), 1 skipped")
    assert "prepared again: 9 source file changed" in err
    assert "skipped val-00002: constant image (every pixel 4)" in err
    assert not (tmp_path / "w" / "images" / "val-00002.npy").exists()  # no image left for a skipped row


def fail_on_a3(sample):
    """A loader for worker processes (picklable) that breaks on image ``a3``."""
    if sample.id == "a3":
        raise RuntimeError("disk gone")
    return read_image(sample.source)


def test_a_failure_in_a_worker_keeps_the_finished_images(data, tmp_path):
    samples = discover_csv(data / "labels.csv", ("normal", "lesion"))
    whole = prepare_samples(samples, tmp_path / "whole", lambda s: read_image(s.source))
    work = tmp_path / "work"
    with pytest.raises(RuntimeError, match="disk gone"):
        prepare_samples(samples, work, fail_on_a3, workers=2)
    done = {json.loads(line)["id"] for line in (work / JOURNAL_FILE).read_text().splitlines()}
    assert "a3" not in done and not (work / "manifest.csv").exists()
    calls = []
    resumed = prepare_samples(samples, work, lambda s: calls.append(s.id) or read_image(s.source))
    assert sorted(calls) == sorted({s.id for s in samples} - done)  # only what had not finished
    assert resumed.rows == whole.rows and snapshot(work) == snapshot(tmp_path / "whole")
