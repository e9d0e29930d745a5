"""``medvlm compare`` on two per-call tables (slices.csv): agreement, flip rate and Cohen's kappa per call,
by hand and against scikit-learn; unparsed answers are a category of their own."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from medvlm.call_stats import compare_answers, read_calls
from medvlm.cli import invoke
from medvlm.errors import DataError
from medvlm.stats import StatsWarning

#: six calls; A and B agree on 4 (1/1, 0/0, unparsed/unparsed, 0/0)
A = ["1", "1", "0", "", "1", "0"]
B = ["1", "0", "0", "", "", "0"]


def _write(path, choices, *, order=None, extra_rows=()):
    rows = [{"patient_id": f"P00{i // 3}", "orientation": "axial" if i % 3 else "coronal",
             "slice_index": 10 + i, "repeat": 0, "choice": c, "p_lgg": "", "p_hgg": "", "p_ng": "",
             "raw": f"Choice: {c}" if c else "I cannot tell."} for i, c in enumerate(choices)]
    rows += list(extra_rows)
    frame = pd.DataFrame(rows)
    if order is not None:
        frame = frame.iloc[order]
    frame.to_csv(path, index=False)
    return path


def test_agreement_flip_rate_and_kappa_by_hand(tmp_path, capsys):
    a = _write(tmp_path / "a.csv", A)
    b = _write(tmp_path / "b.csv", B, order=[5, 3, 1, 0, 2, 4])  # row order does not matter
    assert invoke(["compare", str(a), str(b), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 6 and r["n_patients"] == 2
    assert r["agreement"] == pytest.approx(4 / 6) and r["flip_rate"] == pytest.approx(2 / 6)
    # p_o = 4/6; A's answers 1:3, 0:2, unparsed:1; B's 1:1, 0:3, unparsed:2 -> p_e = (3 + 6 + 2) / 36
    assert r["kappa"] == pytest.approx((4 / 6 - 11 / 36) / (1 - 11 / 36)) == pytest.approx(0.52)
    sk = cohen_kappa_score([c or "unparsed" for c in A], [c or "unparsed" for c in B])
    assert r["kappa"] == pytest.approx(sk)
    assert r["categories"] == ["0", "1", "unparsed"]
    assert r["confusion"] == {"0": {"0": 2, "1": 0, "unparsed": 0}, "1": {"0": 1, "1": 1, "unparsed": 1},
                              "unparsed": {"0": 0, "1": 0, "unparsed": 1}}
    assert invoke(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "agreement 0.667, flip rate 0.333, Cohen's kappa 0.520" in out


def test_unparsed_as_its_own_category_changes_kappa():
    """Dropping the unparsed calls would give another kappa: they count as answers."""
    def frame(choices):
        return pd.DataFrame({"patient_id": "P1", "orientation": "axial",
                             "slice_index": [str(i) for i in range(len(choices))], "repeat": "0",
                             "choice": choices})

    r = compare_answers(frame(["1", "unparsed", "0", "1"]), frame(["1", "1", "0", "unparsed"]))
    # p_o = 2/4; A 1:2 unparsed:1 0:1; B 1:2 0:1 unparsed:1 -> p_e = (4 + 1 + 1) / 16
    assert r["kappa"] == pytest.approx((0.5 - 6 / 16) / (1 - 6 / 16)) == pytest.approx(0.2)
    with pytest.warns(StatsWarning, match="undefined"):
        same = compare_answers(frame(["1", "1"]), frame(["1", "1"]))
    assert same["agreement"] == 1.0 and same["flip_rate"] == 0.0 and same["kappa"] is None


def test_calls_in_one_file_only_exit_2_naming_how_many(tmp_path, capsys):
    extra = {"patient_id": "P009", "orientation": "axial", "slice_index": 1, "repeat": 0, "choice": "1",
             "p_lgg": "", "p_hgg": "", "p_ng": "", "raw": ""}
    a = _write(tmp_path / "a.csv", A)
    b = _write(tmp_path / "b.csv", B[:5], extra_rows=[extra, {**extra, "repeat": 1}])
    assert invoke(["compare", str(a), str(b), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"1 only in {a}" in err and f"2 only in {b}" in err
    # one per-call table, one predictions file: refused
    preds = tmp_path / "predictions.csv"
    pd.DataFrame({"patient_id": ["P000"], "label": [1], "pred": [1], "score": [0.9]}).to_csv(preds,
                                                                                             index=False)
    assert invoke(["compare", str(a), str(preds)]) == 2
    err = capsys.readouterr().err.strip()
    assert "per-call table" in err and len(err.splitlines()) == 1
    # a call twice
    dup = _write(tmp_path / "dup.csv", A, extra_rows=[{"patient_id": "P000", "orientation": "coronal",
                                                       "slice_index": 10, "repeat": 0, "choice": "0"}])
    with pytest.raises(DataError, match="appears 2 times"):
        read_calls(dup)
    assert invoke(["compare", str(dup), str(a)]) == 2


def test_two_eval_runs_seed_vs_seed_swapped(tmp_path, capsys):
    """A model that always writes "0": HGG under seed-swapped, LGG under seed -- every call flips."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_vlm_helpers_calls", Path(__file__).parent / "vlm" /
                                                  "conftest.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)  # type: ignore[union-attr]
    work = helpers.write_tiny_work(tmp_path)
    base = ["eval-vlm", str(work), "--backend", "mock", "--model", "always:0", "--orientations", "axial",
            "--bootstrap", "0", "--no-progress"]
    assert invoke([*base, "--out", str(tmp_path / "seed")]) == 0
    assert invoke([*base, "--out", str(tmp_path / "swapped"), "--prompt", "seed-swapped"]) == 0
    capsys.readouterr()
    assert invoke(["compare", str(tmp_path / "seed" / "slices.csv"), str(tmp_path / "swapped" / "slices.csv"),
                   "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 12 and r["agreement"] == 0.0 and r["flip_rate"] == 1.0 and r["kappa"] == 0.0
    assert r["confusion"] == {"0": {"0": 0, "1": 12}, "1": {"0": 0, "1": 0}}
    # patient-level compare of the same runs is unchanged
    assert invoke(["compare", str(tmp_path / "seed" / "predictions.csv"),
                   str(tmp_path / "swapped" / "predictions.csv"), "--json"]) == 0
    assert "mcnemar_p" in json.loads(capsys.readouterr().out)
