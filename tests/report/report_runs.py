"""Run folders in the documented formats (docs/cli.md, docs/internals.md) for the report tests.

Imported by name (``from report_runs import make_vlm_run``); the demo/study tests may reuse them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from medvlm.metrics import binary_metrics, bootstrap_metrics
from medvlm.runinfo import write_run_info

SCRIPT = "<script>alert('pwned')</script>"
IDS = [f"BraTS20_Training_{i:03d}" for i in range(1, 31)]
LABELS = np.array([0, 1, 1, 1, 1] * 6)  # 6 LGG, 24 HGG
COHORTS = ["train"] * 16 + ["val"] * 6 + ["test"] * 8


def _metrics(df: pd.DataFrame) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _metrics_loud(df)


def _metrics_loud(df: pd.DataFrame) -> dict:
    m = binary_metrics(df["label"], df["pred"], df["score"] if df["score"].notna().any() else None)
    m.update(
        bootstrap_metrics(
            df["label"], df["pred"], df["score"] if df["score"].notna().any() else None, n_boot=100, seed=0
        )
    )
    return m


def make_cnn_run(root: Path, name: str = "cnn-small3d", seed: int = 0) -> Path:
    run = root / name
    run.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    score = np.clip(LABELS * 0.45 + rng.random(30) * 0.55, 0, 1).round(4)
    pred = (score >= 0.5).astype(int)
    preds = pd.DataFrame(
        {"patient_id": IDS, "cohort": COHORTS, "label": LABELS, "pred": pred, "score": score}
    )
    preds.to_csv(run / "predictions.csv", index=False)
    hist = pd.DataFrame(
        [
            {
                "fold": 0,
                "epoch": e,
                "train_loss": 0.7 / e,
                "val_loss": 0.75 / e**0.5,
                "train_accuracy": 1 - 0.4 / e,
                "val_accuracy": 0.9 - 0.3 / e,
            }
            for e in range(1, 6)
        ]
    )
    hist.to_csv(run / "history.csv", index=False)
    folds = {"0": {c: _metrics(preds[preds["cohort"] == c]) for c in ("train", "val", "test")}}
    (run / "metrics.json").write_text(json.dumps({"model": "small3d", "folds": folds, "cv": {}}))
    write_run_info(run, kind="cnn", config={"model": "small3d", "epochs": 5, "seed": seed})
    return run


def make_vlm_run(root: Path, name: str = "vlm-tiny", seed: int = 1) -> Path:
    run = root / name
    run.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    test = [i for i, c in enumerate(COHORTS) if c == "test"]
    slices, patients = [], []
    for o in ("axial", "coronal", "sagittal"):
        for i in test:
            n = {"0": 0, "1": 0, "2": 0, "u": 0}
            for s in range(5):
                c = rng.choice(["0", "1", "1", "2", ""])
                raw = {"0": "0", "1": "The answer is 1 (HGG).", "2": "2", "": SCRIPT}[c]
                slices.append(
                    {
                        "patient_id": IDS[i],
                        "orientation": o,
                        "slice_index": 40 + s,
                        "repeat": 0,
                        "choice": c,
                        "p_lgg": "",
                        "p_hgg": "",
                        "p_ng": "",
                        "raw": raw,
                    }
                )
                n[c or "u"] += 1
            gldr = n["1"] / (n["0"] + n["1"]) if n["0"] + n["1"] else None
            patients.append(
                {
                    "patient_id": IDS[i],
                    "orientation": o,
                    "label": int(LABELS[i]),
                    "n_lgg": n["0"],
                    "n_hgg": n["1"],
                    "n_ng": n["2"],
                    "n_unparsed": n["u"],
                    "gldr": gldr,
                    "score": gldr,
                    "pred": int(n["1"] >= n["0"]),
                }
            )
    pd.DataFrame(slices).to_csv(run / "slices.csv", index=False)
    pats = pd.DataFrame(patients)
    pats.to_csv(run / "patients.csv", index=False)
    comb = (
        pats.groupby("patient_id", sort=False)
        .agg(label=("label", "first"), n_lgg=("n_lgg", "sum"), n_hgg=("n_hgg", "sum"))
        .reset_index()
    )
    comb["score"] = comb["n_hgg"] / (comb["n_lgg"] + comb["n_hgg"])
    comb["pred"] = (comb["n_hgg"] >= comb["n_lgg"]).astype(int)
    comb["cohort"] = "test"
    preds = comb[["patient_id", "cohort", "label", "pred", "score"]]
    preds.to_csv(run / "predictions.csv", index=False)
    ors = {o: _metrics(pats[pats["orientation"] == o]) for o in ("axial", "coronal", "sagittal")}
    ors["combined"] = _metrics(preds)
    n_unparsed = sum(1 for s in slices if s["choice"] == "")
    (run / "metrics.json").write_text(
        json.dumps({"orientations": ors, "n_calls": len(slices), "n_unparsed": n_unparsed, "n_failed": 0})
    )
    write_run_info(
        run, kind="vlm", config={"backend": "transformers", "model": "tiny-mllama", "prompt": SCRIPT}
    )
    return run


def make_consistency_run(root: Path, name: str = "consistency") -> Path:
    run = root / name
    run.mkdir(parents=True)
    choices = ["1"] * 80 + ["0"] * 8 + ["2"] * 4 + [""] * 3
    rows = [
        {
            "patient_id": "BraTS20_Training_001",
            "orientation": "axial",
            "slice_index": 60,
            "repeat": r,
            "choice": c,
            "p_lgg": "",
            "p_hgg": "",
            "p_ng": "",
            "raw": SCRIPT if c == "" else c,
        }
        for r, c in enumerate(choices)
    ]
    pd.DataFrame(rows).to_csv(run / "consistency.csv", index=False)
    (run / "summary.json").write_text(
        json.dumps(
            {
                "n": 95,
                "counts": {"0": 8, "1": 80, "2": 4, "unparsed": 3},
                "majority": "1",
                "agreement": 80 / 95,
                "entropy": 0.85,
            }
        )
    )
    write_run_info(run, kind="consistency", config={"repeats": 95})
    return run


def make_finetune_run(root: Path, name: str = "lora") -> Path:
    run = root / name
    run.mkdir(parents=True)
    steps = np.arange(1, 41)
    log = pd.DataFrame(
        {"step": steps, "epoch": (steps - 1) // 20 + 1, "loss": 2.0 * np.exp(-steps / 15) + 0.1}
    )
    log["val_loss"] = np.where(steps % 20 == 0, 0.5, np.nan)
    log.to_csv(run / "train_log.csv", index=False)
    write_run_info(run, kind="finetune", config={"method": "lora", "r": 8})
    return run


# ------------------------------------------------------------------------------ calibrated arms (issue 15)
# Eight test patients (5 HGG, 3 LGG). The general VLM says HGG for all of them (specificity 0, sensitivity
# 1); its validation run (the FIT side) separates HGG from LGG between 0.70 and 0.76, so a Youden threshold
# fitted there is 0.73, which on the test cohort keeps 4 of 5 HGG and all 3 LGG.
CAL_LABELS = [1, 1, 1, 1, 1, 0, 0, 0]
CAL_SCORES = [0.95, 0.9, 0.85, 0.8, 0.6, 0.7, 0.65, 0.55]
CAL_BIN_COUNTS = [0, 0, 0, 0, 0, 1, 2, 1, 2, 2]  # floor(10 * score), by hand
FIT_LABELS = [1, 1, 1, 0, 0, 0]
FIT_SCORES = [0.9, 0.8, 0.76, 0.7, 0.5, 0.4]


def write_scored_run(root: Path, name: str, cohort: str, labels, preds, scores, *, adapter=None,
                     prefix: str = "P") -> Path:
    """A VLM run folder with one predictions row per patient (``prefix`` 1..n) of ``cohort``."""
    run = root / name
    run.mkdir(parents=True)
    df = pd.DataFrame({"patient_id": [f"{prefix}{i + 1}" for i in range(len(labels))], "cohort": cohort,
                       "label": labels, "pred": preds, "score": scores})
    df.to_csv(run / "predictions.csv", index=False)
    write_run_info(run, kind="vlm", config={"model": "tiny-mllama", "adapter": adapter})
    return run


def make_calibration_study(root: Path, *, general: str = "vlm-general") -> dict[str, Path]:
    """general VLM (test), its validation run (FIT), a fine-tuned VLM (test) and ``medvlm calibrate`` of
    the general VLM (method none, Youden threshold): ``{"general", "fit", "tuned", "cal"}``."""
    from medvlm.calibrate import calibrate

    out = {
        "general": write_scored_run(root, general, "test", CAL_LABELS, [1] * 8, CAL_SCORES),
        "fit": write_scored_run(root, "vlm-general-val", "val", FIT_LABELS, [1] * 6, FIT_SCORES, prefix="V"),
        "tuned": write_scored_run(root, "vlm-tuned", "test", CAL_LABELS, [1, 1, 1, 1, 1, 1, 0, 0],
                                  [0.9, 0.8, 0.7, 0.8, 0.7, 0.6, 0.3, 0.2], adapter=str(root / "lora")),
    }
    calibrate(out["fit"], out["general"], root / "vlm-cal", method="none", threshold="youden")
    out["cal"] = root / "vlm-cal"
    return out
