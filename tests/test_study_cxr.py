"""``medvlm run`` on a 2D image task: a synthetic cxr cohort and its task file (examples/demo-cxr.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medvlm.errors import ConfigError
from medvlm.experiment import fingerprint, load_experiment, parse_experiment
from medvlm.study import _Paths, _stage_data, _stage_prepare, _stage_split, plan_stages

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo-cxr.yaml"
RUNS = {"vlm": [{"name": "v", "backend": "mock", "model": "hash"}]}  # a study needs something to run


def test_the_demo_file_is_valid():
    config, base = load_experiment(DEMO)
    assert config.task == "cxr.yaml" and config.data.synthetic.kind == "cxr"
    assert base == DEMO.parent


def test_the_brats_study_keeps_its_data_fingerprint(tmp_path):
    before = {"path": None, "synthetic": {"patients": 40, "lgg_fraction": 0.25, "seed": 0, "size": "medium"}}
    for data in ({"synthetic": {}}, {"synthetic": {"kind": "brats"}}):
        config = parse_experiment({"data": data, **RUNS})
        p = _Paths(config, tmp_path, tmp_path)
        assert plan_stages(config, p, progress=False)[0].fingerprint == fingerprint(before, str(p.data))
    cxr = parse_experiment({"data": {"synthetic": {"kind": "cxr"}}, "task": "cxr.yaml", **RUNS})
    assert plan_stages(cxr, _Paths(cxr, tmp_path, tmp_path), progress=False)[0].fingerprint != \
        fingerprint(before, str(tmp_path / "data"))


def test_data_prepare_and_split_stages(tmp_path):
    config = parse_experiment({"task": "cxr.yaml", "data": {"synthetic": {"kind": "cxr", "patients": 12,
                                                                         "size": "small"}},
                               "split": {"folds": 2, "test_fraction": 0.25}, **RUNS})
    p = _Paths(config, tmp_path, tmp_path)
    data = _stage_data(p, False)
    assert data.summary["source"] == "synthetic cxr" and (tmp_path / "data" / "cxr.yaml").is_file()
    assert p.task() == str(tmp_path / "data" / "cxr.yaml")  # found in the data folder
    prepared = _stage_prepare(p, False)
    # what was done to the images (18 of 12 patients, 10 with a lesion), never the BraTS volume shape
    assert data.summary["images"] == 18 and data.summary["lesion"] == 10
    assert prepared.summary == {"images": 18, "skipped": 0, "reused": 0, "size": "64x64",
                                "classes": "no-lesion 8, lesion 10", "skipped_reasons": {}}
    assert json.loads((tmp_path / "work" / "task.json").read_text())["name"] == "cxr"
    _stage_split(p, False)
    assert json.loads((tmp_path / "work" / "splits.json").read_text())["unit"] == "image"


def test_a_task_file_that_does_not_exist_is_one_line(tmp_path):
    config = parse_experiment({"task": "nowhere.yaml", "data": {"path": str(tmp_path)}, **RUNS})
    with pytest.raises(ConfigError, match=r"^--task .*nowhere\.yaml: no such task file$"):
        _stage_prepare(_Paths(config, tmp_path / "out", tmp_path), False)


def test_prepare_prints_what_it_did_to_the_images(tmp_path, capsys):
    from medvlm.cli import invoke
    from medvlm.data.synth_cxr import synth_cxr

    synth_cxr(tmp_path / "data", patients=12, size="small")
    (tmp_path / "data" / "images" / "broken.png").write_bytes(b"not a png")
    with (tmp_path / "data" / "labels.csv").open("a") as fh:
        fh.write("images/broken.png,lesion,CXR9999\n")
    argv = ["prepare", str(tmp_path / "data"), "--out", str(tmp_path / "work"), "--task",
            str(tmp_path / "data" / "cxr.yaml")]
    assert invoke(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("18 images prepared (0 reused), 1 skipped; size 64x64; classes no-lesion 8, "
                          "lesion 10 -> ")
    assert "95" not in out and "128" not in out  # the BraTS --shape default says nothing here
    assert "  skipped broken: unreadable image" in err  # each skipped image named, with its reason


def test_the_image_size_says_when_images_differ(tmp_path):
    import numpy as np
    import pandas as pd

    from medvlm.data.prepare_summary import image_size

    (tmp_path / "images").mkdir()
    rows = []
    for i, (h, w) in enumerate([(28, 28), (64, 32), (28, 28)]):
        np.save(tmp_path / "images" / f"i{i}.npy", np.zeros((h, w, 3), np.float32))
        rows.append({"id": f"i{i}", "patient_id": f"p{i}", "label": 0, "status": "ok", "height": h,
                     "width": w})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    assert image_size(tmp_path) == "28x28 to 64x32 RGB"
    np.save(tmp_path / "images" / "i0.npy", np.zeros((16, 28, 28), np.float32))  # a 3D MedMNIST image
    assert image_size(tmp_path) == "16x28x28"
