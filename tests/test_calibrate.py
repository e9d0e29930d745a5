"""``medvlm calibrate`` and the calibration keys of ``medvlm metrics``, through the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from medvlm.cli import invoke


def _write(path, rows, *, orientation: str | None = None):
    df = pd.DataFrame(rows, columns=["patient_id", "cohort", "label", "pred", "score"])
    if orientation:
        df.insert(1, "orientation", orientation)
    df.to_csv(path, index=False)
    return path


def _cohort(prefix: str, cohort: str, n: int, seed: int):
    """Scores that rank well (HGG higher) but sit above 0.5 for everyone: the study's failure."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n - n // 3, int), np.zeros(n // 3, int)]
    s = np.clip(0.68 + 0.2 * y + rng.normal(0, 0.06, n), 0.51, 0.99).round(4)
    return [(f"{prefix}{i:03d}", cohort, int(y[i]), int(s[i] >= 0.5), float(s[i])) for i in range(n)]


@pytest.fixture
def sides(tmp_path):
    fit = _write(tmp_path / "fit.csv", _cohort("V", "val", 30, 0))
    apply = _write(tmp_path / "apply.csv", _cohort("T", "test", 45, 1))
    return fit, apply


def test_metrics_json_reports_brier_ece_log_loss_aurc_by_hand(tmp_path, capsys):
    path = _write(tmp_path / "p.csv", [("a", "test", 1, 1, 1.0), ("b", "test", 0, 1, 0.6),
                                       ("c", "test", 1, 0, 0.3), ("d", "test", 0, 0, 0.05)])
    assert invoke(["metrics", str(path), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["brier"] == pytest.approx((0 + 0.36 + 0.49 + 0.0025) / 4)
    # bins: 1.0 -> 9 (gap 0), 0.6 -> 6 (0.6), 0.3 -> 3 (0.7), 0.05 -> 0 (0.05)
    assert m["ece"] == pytest.approx((0.6 + 0.7 + 0.05) / 4)
    assert m["log_loss"] == pytest.approx(-(math.log(1 - 1e-12) + math.log(0.4) + math.log(0.3)
                                            + math.log(0.95)) / 4)
    # confidences 1.0 (right), 0.6 (wrong), 0.7 (wrong), 0.95 (right): sorted 1.0, 0.95, 0.7, 0.6
    assert m["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 2 / 4) / 4)


def test_metrics_without_scores_has_null_calibration_and_ci_keys(tmp_path, capsys):
    path = tmp_path / "p.csv"
    path.write_text("patient_id,label,pred\na,1,1\nb,0,0\nc,1,0\n")
    assert invoke(["metrics", str(path), "--json", "--bootstrap", "100"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert all(m[k] is None and m[f"{k}_ci"] is None for k in ("brier", "ece", "log_loss", "aurc"))


def test_metrics_bootstrap_gives_calibration_cis(sides, capsys):
    assert invoke(["metrics", str(sides[1]), "--json", "--bootstrap", "200"]) == 0
    m = json.loads(capsys.readouterr().out)
    for key in ("brier", "ece", "log_loss", "aurc"):
        low, high = m[f"{key}_ci"]
        assert 0 <= low <= high


def test_metrics_abstain_below_reports_coverage(sides, capsys):
    df = pd.read_csv(sides[1])
    conf = np.where(df["pred"] == 1, df["score"], 1 - df["score"])
    assert invoke(["metrics", str(sides[1]), "--json", "--abstain-below", "0.8"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n"] == int((conf >= 0.8).sum()) and m["n_abstained"] == int((conf < 0.8).sum())
    assert m["coverage"] == pytest.approx((conf >= 0.8).mean())


@pytest.mark.parametrize("method", ["temperature", "platt", "none"])
def test_calibrate_fixes_the_threshold_and_keeps_the_auc(sides, tmp_path, capsys, method):
    fit, apply = sides
    out = tmp_path / "cal"
    assert invoke(["calibrate", str(fit), str(apply), "--out", str(out), "--method", method]) == 0
    capsys.readouterr()
    assert invoke(["metrics", str(apply), "--json"]) == 0
    raw = json.loads(capsys.readouterr().out)
    cal = json.loads((out / "metrics.json").read_text())
    assert raw["specificity"] == 0.0  # every patient above 0.5: the fixed threshold says HGG to all
    assert cal["specificity"] > 0.5
    assert cal["auc"] == pytest.approx(raw["auc"], abs=1e-12)  # a monotone map keeps the ranking
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "calibrated"
    assert info["config"]["fit"] == str(fit.resolve()) and info["config"]["apply"] == str(apply.resolve())


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic", "none"])
def test_calibration_json_reproduces_the_written_predictions(sides, tmp_path, method):
    from medvlm.calibration import apply_calibrator

    fit, apply = sides
    out = tmp_path / "cal"
    assert invoke(["calibrate", str(fit), str(apply), "--out", str(out), "--method", method,
                   "--threshold", "balanced"]) == 0
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["n_fit"] == 30 and cal["threshold_rule"] == "balanced"
    written = pd.read_csv(out / "predictions.csv")
    again = apply_calibrator(pd.read_csv(apply)["score"].to_numpy(), cal["method"], cal["params"])
    np.testing.assert_allclose(written["score"], again, rtol=1e-12)
    assert (written["pred"] == (written["score"] >= cal["threshold"]).astype(int)).all()


def test_youden_threshold_in_calibration_json_is_best_on_fit(sides, tmp_path):
    from medvlm import calibration as c

    fit, apply = sides
    out = tmp_path / "cal"
    assert invoke(["calibrate", str(fit), str(apply), "--out", str(out), "--method", "none"]) == 0
    t = json.loads((out / "calibration.json").read_text())["threshold"]
    df = pd.read_csv(fit)
    y, s = df["label"].to_numpy(), df["score"].to_numpy()
    best = max(sum(c.sens_spec(y, s, cut)) - 1 for cut in np.r_[s, 1.01])
    assert sum(c.sens_spec(y, s, t)) - 1 == pytest.approx(best)


def test_run_folders_and_vlm_orientation_rows(tmp_path, capsys):
    fit_run, apply_run = tmp_path / "fit-run", tmp_path / "apply-run"
    fit_run.mkdir()
    apply_run.mkdir()
    rows = _cohort("V", "val", 20, 3)
    pd.concat([pd.read_csv(_write(tmp_path / "a.csv", rows, orientation=o)) for o in ("axial", "combined")]
              ).to_csv(fit_run / "predictions.csv", index=False)
    _write(apply_run / "predictions.csv", _cohort("T", "test", 20, 4), orientation="combined")
    out = tmp_path / "cal"
    assert invoke(["calibrate", str(fit_run), str(apply_run), "--out", str(out)]) == 0
    assert json.loads((out / "calibration.json").read_text())["n_fit"] == 20  # combined rows only
    assert "fitted on 20 rows" in capsys.readouterr().out


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("medvlm: error: "), err
    return err


@pytest.mark.parametrize("case, message", [
    ("one class", "hold one class only"),
    ("no scores", "no scores"),
    ("no val rows", "no 'val' rows (it has test)"),
    ("slices vs patients", "predict different units"),
    ("shared patients", "share patients"),
    ("scores not probabilities", "is not a probability in [0, 1]"),
])
def test_bad_fit_or_apply_is_one_line_and_exit_2(sides, tmp_path, capsys, case, message):
    fit, apply = sides
    df = pd.read_csv(fit)
    bad = tmp_path / "bad.csv"
    if case == "one class":
        df[df["label"] == 1].to_csv(bad, index=False)
    elif case == "no scores":
        df.drop(columns="score").to_csv(bad, index=False)
    elif case == "no val rows":
        df.assign(cohort="test").to_csv(bad, index=False)
    elif case == "slices vs patients":
        df.assign(orientation="axial", slice_index=3).to_csv(bad, index=False)
    elif case == "shared patients":
        df.assign(patient_id=pd.read_csv(apply)["patient_id"].iloc[:30].to_numpy()).to_csv(bad, index=False)
    else:
        df.assign(score=df["score"] * 10).to_csv(bad, index=False)
    assert invoke(["calibrate", str(bad), str(apply), "--out", str(tmp_path / "cal")]) == 2
    assert message in _one_line(capsys)
    assert not (tmp_path / "cal" / "predictions.csv").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--method", "beta", "--method must be one of temperature, platt, isotonic, none"),
    ("--threshold", "median", "--threshold must be youden, balanced or a number in [0, 1]"),
    ("--threshold", "1.5", "--threshold must be youden, balanced or a number in [0, 1]"),
    ("--abstain-below", "0.2", "--abstain-below takes a confidence in [0.5, 1]"),
])
def test_bad_options_are_one_line_and_exit_2(sides, tmp_path, capsys, option, value, message):
    fit, apply = sides
    assert invoke(["calibrate", str(fit), str(apply), "--out", str(tmp_path / "cal"), option, value]) == 2
    assert message in _one_line(capsys)


def test_method_none_with_a_fixed_threshold_needs_no_second_class(sides, tmp_path):
    fit, apply = sides
    df = pd.read_csv(fit)
    one = tmp_path / "one.csv"
    df[df["label"] == 1].to_csv(one, index=False)
    out = tmp_path / "cal"
    assert invoke(["calibrate", str(one), str(apply), "--out", str(out), "--method", "none",
                   "--threshold", "0.8"]) == 0
    written = pd.read_csv(out / "predictions.csv")
    assert (written["pred"] == (written["score"] >= 0.8).astype(int)).all()
