"""The study-level parts of the report, built from run files and the work folder they name.

Cohort table (patients per label per split), a plain-language summary of what the numbers say,
limitations, reproducibility (versions, git revision, seeds, config) and the CLAIM checklist items the
run records can fill. Everything is built from files on disk; every string is escaped by
:func:`medvlm.report.html.html_table` or by the report's plain-text sections. Class names, the
reference standard and the task's own limitations come from the work folder's task. Which sections a
report gets, per work folder, is :mod:`medvlm.report.work_sections`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from medvlm.report.html import load_run, test_cohort_predictions

GENERIC_LIMITATIONS = (
    "A run on the synthetic cohort or with the tiny stand-in VLM shows that the pipeline works; "
    "its numbers say nothing about real models or patients.\n\n"
    "Confidence intervals come from a patient-level bootstrap; paired tests (McNemar, DeLong) compare "
    "models on the same test patients and are not corrected for multiple comparisons."
)


def limitations(work: Path) -> str:
    """The task's own limitations, then those of every medvlm study."""
    from medvlm.tasks import work_task

    own = work_task(work).limitations
    return f"{own}\n\n{GENERIC_LIMITATIONS}" if own else GENERIC_LIMITATIONS


def cohort_rows(work: Path) -> list[dict[str, Any]]:
    """Patients per label in each cohort of the split (and the skipped ones), from the work folder
    (the manifest's patient labels; for a slice-level task, the patients' own labels, e.g. the grade)."""
    import pandas as pd

    from medvlm.data.cohorts import read_manifest, read_splits
    from medvlm.tasks import work_task

    manifest = read_manifest(work)
    labels = {pid: lab for pid, lab in zip(manifest["patient_id"], manifest["label"], strict=True)}
    task = work_task(work)
    classes = task.classes
    units = None
    if task.unit == "image":  # the split lists image ids: count each cohort's images and their patients
        units = manifest.rename(columns={"id": "_image"})
    elif task.unit != "patient":  # count the labelled units of each cohort's patients
        from medvlm.data.cohorts import UNITS_FILE

        units = pd.read_csv(work / UNITS_FILE, dtype={"patient_id": str})
        units = units[units["orientation"].isin(task.default_orientations)]
    rows = []

    def add(name: str, ids: list[str]) -> None:
        if units is None:
            counts = {f"{c} ({i})": sum(1 for p in ids if labels.get(p) == i) for i, c in enumerate(classes)}
            rows.append({"cohort": name, "patients": len(ids), **dict(reversed(counts.items()))})
            return
        part = units[units["_image" if task.unit == "image" else "patient_id"].isin(set(ids))]
        counts = {f"{c} ({i}) {task.unit}s": int((part["label"] == i).sum()) for i, c in enumerate(classes)}
        n = part["patient_id"].nunique() if task.unit == "image" else len(ids)
        rows.append({"cohort": name, "patients": n, **counts})

    splits = read_splits(work)
    add("test", list(splits["test"]))
    for k, fold in enumerate(splits["folds"]):
        add(f"fold {k} train", list(fold["train"]))
        add(f"fold {k} val", list(fold["val"]))
    ok = manifest[manifest["status"] == "ok"]
    add("all usable (status ok)", list(ok["id" if task.unit == "image" else "patient_id"]))
    skipped = manifest[manifest["status"] != "ok"]
    blank = {k: "" for k in rows[-1] if k not in ("cohort", "patients")}
    rows.append({"cohort": "skipped by prepare", "patients": len(skipped), **blank})
    return rows


def _test_metrics(run_path: Path) -> tuple[dict[str, Any], Any, Any] | None:
    """(test-cohort metrics, the predictions, the run's task) of a classifier run, else None."""
    from medvlm.errors import DataError
    from medvlm.predictions import predictions_metrics
    from medvlm.report.runs import run_task
    from medvlm.report.summary import CLASSIFIER_KINDS

    run = load_run(run_path)
    if run.kind not in CLASSIFIER_KINDS:
        return None
    try:
        df = test_cohort_predictions(run)
    except DataError:
        return None
    if "score" in df.columns and df["score"].isna().any():
        df = df.drop(columns="score")  # an AUC needs every unit's score
    task = run_task(run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = predictions_metrics(df.astype({"label": int}), task=task if task.n_classes > 2 else None)
    return m, df, task


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{x:.2f}"


UNITS = {"patient": "patients", "slice": "slices", "image": "images"}
METHOD_WORDS = {"temperature": "temperature scaling", "platt": "Platt scaling",
                "isotonic": "isotonic regression"}
COHORT_WORDS = {"val": "validation", "train": "training", "test": "test"}


def _moved(what: str, before: Any, after: Any, *, plural: bool = False) -> str:
    """``"raises specificity (LGG) from 0.05 to 0.48"`` (lowers / leaves at; ``plural``: raise, lower,
    leave), numbers as the plain summary rounds them."""
    a, b = _num(before), _num(after)
    if a == b:
        verb = "leave" if plural else "leaves"
        return f"{verb} {what} at {b}"
    verb = "move" if before is None or after is None else ("raise" if after > before else "lower")
    return f"{verb if plural else verb + 's'} {what} from {a} to {b}"


def calibration_line(path: Path, m: dict[str, Any], task: Any,
                     tuned: list[tuple[str, dict[str, Any]]]) -> str:
    """What a calibrated run did to the run it calibrates, on the test cohort: e.g. "cal: a threshold
    fitted on 40 validation patients raises specificity (LGG) from 0.05 to 0.48 on the test cohort of vlm
    (sensitivity (HGG) from 1.00 to 0.80); fine-tuning reached 0.55 (vlm-lora)." (fine-tuning named for a
    general VLM only); n_fit and the method from calibration.json, the numbers from both runs'
    test-cohort predictions."""
    from medvlm.report.roles import calibration_source, vlm_role
    from medvlm.report.runs import _read_json

    run = load_run(path)
    cal = _read_json(run, "calibration.json")
    cal = cal if isinstance(cal, dict) else {}
    method = cal.get("method")
    plural = method not in (None, "none")
    what = f"{METHOD_WORDS.get(method, method)} and a threshold" if plural else "a threshold"
    cohort = COHORT_WORDS.get(str(cal.get("fit_cohort")), str(cal.get("fit_cohort") or "FIT"))
    units = UNITS.get(task.unit, f"{task.unit}s")
    neg, pos = task.classes[1 - task.positive_label], task.classes[task.positive_label]
    fitted = f"{what} fitted on {cal.get('n_fit', 'n/a')} {cohort} {units}"
    source = calibration_source(run)
    raw = _test_metrics(source.path) if source is not None and source.kind != "calibrated" else None
    if raw is None:
        return (f"{path.name}: {fitted} {'give' if plural else 'gives'} specificity ({neg}) "
                f"{_num(m['specificity'])} and sensitivity ({pos}) {_num(m['recall'])} on the test cohort "
                "(the run it calibrates is not available).")
    m_raw = raw[0]
    spec = _moved(f"specificity ({neg})", m_raw["specificity"], m["specificity"], plural=plural)
    before, after = _num(m_raw["recall"]), _num(m["recall"])
    sens = (f"sensitivity ({pos}) unchanged at {after}" if before == after
            else f"sensitivity ({pos}) from {before} to {after}")
    text = f"{path.name}: {fitted} {spec} on the test cohort of {source.name} ({sens})"
    if vlm_role(run) == "calibrated-general" and tuned:
        text += "; fine-tuning reached " + ", ".join(f"{_num(mt['specificity'])} ({nt})" for nt, mt in tuned)
    return text + "."


def plain_summary(runs: list[Path]) -> str:
    """What the numbers say, in sentences a clinician-researcher can read (test cohort only). A control
    of a VLM run (no image, an artifact, another prompt: :mod:`medvlm.report.controls`) gets its verdict
    instead of its numbers, and is no general VLM arm of the fine-tuning comparison."""
    from medvlm.report.control_verdicts import control_verdicts
    from medvlm.report.multiclass import majority_rate
    from medvlm.runinfo import read_run_info

    loaded = [load_run(p) for p in runs]
    verdicts = control_verdicts(loaded)
    controls = {c.run.name for c, _ in verdicts}
    lines = []
    base_rate = None
    base_name = ""
    multi_rate: str | None = None  # a multi-class task: the most frequent class's share, as a sentence
    general: list[tuple[str, dict[str, Any]]] = []
    tuned: list[tuple[str, dict[str, Any]]] = []
    few_shot: list[tuple[str, dict[str, Any]]] = []  # eval-vlm --shots K without an adapter
    calibrated: list[tuple[Path, dict[str, Any], Any]] = []
    for path, run in zip(runs, loaded, strict=True):
        if run.name in controls:
            continue
        found = _test_metrics(path)
        if found is None:
            continue
        m, df, task = found
        info = read_run_info(path, strict=False) or {}
        kind = info.get("kind")
        df = df[df["pred"].notna()]  # the answered units (abstentions are counted in the metrics)
        if df.empty:
            lines.append(f"{path.name}: no test unit was answered ({m['n_abstained']} abstained).")
            continue
        if task.n_classes > 2:  # no positive class: balanced accuracy, macro F1, recall per class
            from medvlm.report.multiclass import multiclass_line

            lines.append(multiclass_line(path.name, m, task, UNITS[task.unit]))
            multi_rate = multi_rate or majority_rate(df, task)
            if kind == "vlm":
                cfg = info.get("config") or {}
                arm = tuned if cfg.get("adapter") else few_shot if cfg.get("shots") else general
                arm.append((path.name, m))
            continue
        neg, pos = task.classes[0], task.classes[task.positive_label]
        units = UNITS[task.unit]
        n_neg = int((df["label"] == 0).sum())
        base_rate = float((df["label"] == 1).mean())
        base_name = pos
        said_pos = float(df["pred"].mean())
        text = (f"{path.name}: accuracy {_num(m['accuracy'])}, sensitivity ({pos}) {_num(m['recall'])}, "
                f"specificity ({neg}) {_num(m['specificity'])}, AUC {_num(m['auc'])} "
                f"on {m['n']} test {units}.")
        if said_pos >= 0.9 and n_neg:
            text += (f" It predicted {pos} for {said_pos:.0%} of {units} and recognised {m['tn']} of {n_neg} "
                     f"{neg} {units}{task.all_positive_note}.")
            if m["auc"] is not None and m["auc"] >= 0.75 and kind != "calibrated":
                text += (f" Its AUC of {m['auc']:.2f} says its scores still rank most {neg} {units} below "
                         f"the {pos} ones: the fixed 0.5 threshold, not the ranking, fails.")
        lines.append(text)
        if kind == "calibrated":
            calibrated.append((path, m, task))
        if kind == "vlm":
            cfg = info.get("config") or {}
            arm = tuned if cfg.get("adapter") else few_shot if cfg.get("shots") else general
            arm.append((path.name, m))
    if multi_rate is not None:  # the binary comparisons below name sensitivity and specificity
        from medvlm.report.multiclass import multiclass_comparisons

        lines += multiclass_comparisons(tuned, few_shot, general)
        tuned, few_shot = [], []
    for name_t, m_t in tuned:
        for name_g, m_g in general:
            lines.append(
                f"Fine-tuning ({name_t} vs {name_g}) moved specificity from {_num(m_g['specificity'])} to "
                f"{_num(m_t['specificity'])}, sensitivity from {_num(m_g['recall'])} to "
                f"{_num(m_t['recall'])} and AUC from {_num(m_g['auc'])} to {_num(m_t['auc'])}; the paired "
                "tests below say whether such a difference is more than chance on this many patients.")
    for name_f, m_f in few_shot:
        for name_g, m_g in general:
            lines.append(
                f"Labelled examples in the prompt ({name_f} vs {name_g}) moved specificity from "
                f"{_num(m_g['specificity'])} to {_num(m_f['specificity'])}, sensitivity from "
                f"{_num(m_g['recall'])} to {_num(m_f['recall'])} and AUC from {_num(m_g['auc'])} to "
                f"{_num(m_f['auc'])}; the paired tests below say whether such a difference is more than "
                "chance on this many patients.")
    for path, m, task in calibrated:
        lines.append(calibration_line(path, m, task, tuned))
    for control, text in verdicts:
        lines.append(f"{control.run.name} (a control of {control.reference.name}: {control.label}): {text}")
    if base_rate is not None:
        lines.append(f"For comparison, predicting {base_name} for everyone scores accuracy "
                     f"{base_rate:.2f} on this test cohort: accuracy alone cannot separate a model from that "
                     "rule, which is why specificity, balanced accuracy, MCC and AUC are reported with "
                     "confidence intervals.")
    if multi_rate is not None:
        lines.append(multi_rate)
    if not lines:
        return "No run produced test-cohort predictions."
    return "\n\n".join(lines)


def reproducibility_rows(runs: list[Path]) -> list[dict[str, Any]]:
    """One row per run: kind, git revision, key package versions and seeds, from ``run.json``."""
    from medvlm.runinfo import display_name, read_run_info

    rows = []
    for path in runs:
        info = read_run_info(path, strict=False) or {}
        versions = info.get("versions", {})
        cfg = info.get("config", {}) or {}
        seeds = {k: cfg[k] for k in ("seed", "boot_seed") if k in cfg}
        rows.append({
            "run": display_name(path), "kind": info.get("kind", ""), "created": info.get("created", ""),
            "git revision": (info.get("git_revision") or "")[:12],
            "versions": ", ".join(f"{k} {versions[k]}" for k in ("medvlm", "torch", "transformers", "peft")
                                  if k in versions),
            "seeds": json.dumps(seeds),
        })
    return rows


def _prepare_record(work: Path) -> dict[str, Any]:
    """``WORK/prepare.json`` (what prepare recorded: data folder, shape, margin), {} when absent."""
    try:
        record = json.loads((work / "prepare.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _data_facts(work: Path, config: Any) -> tuple[str, str]:
    """(data source, preprocessing) in the CLAIM table's words: from the experiment config of ``medvlm
    run``/``demo``, else from what ``prepare`` recorded in the work folder."""
    from medvlm.tasks import work_task

    task = work_task(work)
    if config is not None:
        data = config.data
        if data.synthetic:
            synth = data.synthetic
            source = f"synthetic BraTS-layout cohort ({synth.patients} patients, seed {synth.seed})"
        else:
            source = f"BraTS 2020 training data at {data.path}"
        return source, task.preprocessing.format(margin_mm=config.prepare.margin_mm,
                                                 shape="x".join(map(str, config.prepare.shape)))
    record = _prepare_record(work)
    source = (f"data prepared from {record['data']}" if record.get("data")
              else "not recorded in the work folder (prepare.json)")
    try:
        prep = task.preprocessing.format(margin_mm=float(record["margin_mm"]),
                                         shape="x".join(str(int(v)) for v in record["shape"]))
    except (KeyError, TypeError, ValueError):
        prep = "not recorded in the work folder (prepare.json)"
    return source, prep


def claim_rows(work: Path, runs: list[Path], config: Any = None) -> list[dict[str, str]]:
    """The CLAIM (Checklist for AI in Medical Imaging) items that the run records can fill, for the runs
    made from ``work`` (``config``: the experiment's, when ``medvlm run``/``demo`` made them)."""
    from medvlm.data.cohorts import read_manifest, read_splits
    from medvlm.tasks import work_task

    task = work_task(work)
    manifest = read_manifest(work)
    splits = read_splits(work)
    n_ok = int((manifest["status"] == "ok").sum())
    n_skip = len(manifest) - n_ok
    source, preprocessing = _data_facts(work, config)
    from medvlm.report.controls import control_names

    loaded = [load_run(r) for r in runs]
    kinds = sorted({r.kind for r in loaded})
    controls = control_names(loaded)
    return [
        {"item": "Data source", "filled from the run records": source},
        {"item": "Eligibility and exclusions",
         "filled from the run records": f"{n_ok} usable patients; {n_skip} skipped by prepare "
                                        "(each with its reason in manifest.csv)"},
        {"item": "Reference standard", "filled from the run records": task.reference_standard},
        {"item": "Data partitions", "filled from the run records":
            f"patient-level, stratified: test {len(splits['test'])} patients, {len(splits['folds'])} folds "
            f"over the rest (seed {splits.get('seed')}); no patient in two cohorts (checked)"},
        {"item": "Preprocessing", "filled from the run records": preprocessing},
        {"item": "Models", "filled from the run records": ", ".join(kinds)},
        {"item": "Metrics", "filled from the run records": _claim_metrics(task.n_classes)},
        {"item": "Failure analysis", "filled from the run records":
            "unparsed and failed VLM answers counted per run; "
            + ("per-patient vote plots; " if task.unit == "patient" else "") + "consistency runs"
            + ("; controls of the VLM (image taken away or masked, MRI artifacts, other prompts): agreement "
               "with its answers on the real image, paired tests, robustness curves" if controls else "")
            + "; test-cohort metrics per contributing collection and age band (too small subgroups shown "
              "as such)"},
    ]


def _claim_metrics(n_classes: int) -> str:
    """CLAIM's "Metrics" item: what the report computes for a task of ``n_classes`` classes."""
    if n_classes > 2:
        return ("accuracy, balanced accuracy, macro F1, per-class precision and recall, one-vs-rest macro "
                "AUC with 95% bootstrap CIs; the K x K confusion matrix; McNemar paired tests on "
                "correct/incorrect")
    return ("accuracy, precision, recall, specificity, F1, balanced accuracy, MCC, AUC with 95% bootstrap "
            "CIs; calibration of the scores: Brier score, ECE (10 bins), log loss, reliability diagrams; "
            "selective prediction: risk-coverage curves and AURC; McNemar and DeLong paired tests")


def cohort_caption(work: Path) -> str:
    from medvlm.tasks import work_task

    unit = work_task(work).unit
    return "Patients per label in each cohort" if unit == "patient" else f"Patients, and {unit}s per label"
