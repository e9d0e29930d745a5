"""``medvlm metrics``, ``medvlm compare`` and ``medvlm report``: the Results section of docs/cli.md."""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from medvlm.cli._app import app, out_file, out_folder


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Show library warnings (undefined metrics, skipped tests) as one ``medvlm: warning:`` line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen: set[str] = set()
            for w in caught:
                text = str(w.message)
                if text not in seen:
                    seen.add(text)
                    print(f"medvlm: warning: {text}", file=sys.stderr)


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _resamples(value: int) -> int:
    """--bootstrap: 0 (no interval) or enough resamples for a 95% interval to mean something."""
    from medvlm.errors import ConfigError
    from medvlm.metrics import MIN_RESAMPLES

    if 0 < value < MIN_RESAMPLES:
        raise ConfigError(f"--bootstrap {value}: a 95% interval needs at least {MIN_RESAMPLES} resamples "
                          "(1000 is usual), or 0 for none")
    return value


def _few_patients_warning(df: object, predictions: Path) -> None:
    """Warn (one line on stderr) when a class of the scored rows has few patients (few images for an
    image task named by the run.json beside ``predictions``; :mod:`medvlm.small_samples`)."""
    from medvlm.runinfo import read_run_info
    from medvlm.small_samples import class_unit_counts, few_patients_warnings

    info = read_run_info(predictions.parent, strict=False) or {}
    cfg = info.get("config") if isinstance(info.get("config"), dict) else {}
    task = cfg.get("task") if isinstance(cfg.get("task"), dict) else {}
    unit = "image" if task.get("unit") == "image" else "patient"
    for text in few_patients_warnings(class_unit_counts(df, unit), unit=unit):
        warnings.warn(text, UserWarning, stacklevel=2)


@app.command("metrics")
def metrics_cmd(
    predictions: Path = typer.Argument(..., help="CSV with label,pred[,score] (score: P(label 1)), e.g. a "
                                       "run's predictions.csv."),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0, callback=_resamples,
                                  help="Bootstrap resamples for 95% CIs (0: none; else at least 100)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    ci_method: str = typer.Option("percentile", "--ci-method", help="Bootstrap interval: percentile or bca."),
    cohort: str = typer.Option(None, "--cohort", help="Rows scored: test, val, train or all (default: test "
                               "where the file has a cohort column, else every row)."),
    abstain: float = typer.Option(None, "--abstain-below", help="Selective prediction: rows whose confidence "
                                  "(score of the predicted class) is below this are abstentions."),
    classes_opt: str = typer.Option(None, "--classes", help="The task's classes where no run.json beside the "
                                    "file names them: a number K, or the names in label order (a,b,c)."),
    task_opt: str = typer.Option(None, "--task", help="The task whose classes the labels are (a name of "
                                 "`medvlm tasks`, or a task YAML) where no run.json beside the file names "
                                 "it."),
) -> None:
    """Metrics of one predictions file (label 1 positive, as `medvlm tasks` names it), optionally with
    bootstrap 95% CIs (resampling patients when rows are slices). With scores: brier, ece, log_loss and
    aurc (calibration and selective prediction; lower is better). Labels beyond 0/1 (a multi-class task,
    named by the run.json beside the file, else by --classes or --task, else inferred from the labels and
    said so): accuracy, balanced accuracy, macro F1, one-vs-rest AUC, and
    per class precision, recall, specificity, F1 and support."""
    from medvlm.cli._classes import chosen_classes, inferred_classes, read_binary
    from medvlm.cli._runs import require_csv_file
    from medvlm.errors import ConfigError
    from medvlm.metrics import BOOTSTRAP_METHODS, read_predictions
    from medvlm.predictions import check_one_row_per_unit, predictions_metrics, select_cohort
    from medvlm.registry import check_choice

    check_choice("--ci-method", ci_method, BOOTSTRAP_METHODS)
    require_csv_file(predictions, "PREDICTIONS")
    classes = chosen_classes(classes_opt, task_opt, _recorded_classes(predictions), predictions)
    df = read_predictions(predictions, n_classes=classes.n_classes if classes else None)
    k, note = (classes.n_classes, None) if classes else inferred_classes(df, str(predictions))
    if note:
        print(f"medvlm: warning: {note}", file=sys.stderr)
    if k == 2 and not classes:
        df = read_binary(predictions, df)  # a binary file: checked as one (pred 0, 1 or empty)
    df = select_cohort(df, None if cohort == "all" else (cohort or "test"),
                       source=str(predictions), hint="; choose the rows with --cohort (a cohort, or all)",
                       required=cohort not in (None, "all"))
    if abstain is not None:
        if k > 2:
            raise ConfigError(f"--abstain-below: {predictions} has {k} classes; selective prediction reads "
                              "the score of a binary task")
        from medvlm.predictions import abstain_below

        df = abstain_below(df, abstain, source=str(predictions))
    check_one_row_per_unit(df, str(predictions))  # a broken file is one error line, before any warning
    with _warnings_to_stderr():
        if k > 2 and not classes:  # p_<class name> columns without the run.json that orders them
            from medvlm.cli._named_probs import use_named_prob_columns

            df = use_named_prob_columns(df, k, str(predictions))
        _few_patients_warning(df, predictions)
        result = predictions_metrics(df, n_boot=bootstrap, seed=seed, method=ci_method,
                                     source=str(predictions), task=classes if k > 2 else None)
    if as_json:
        print(json.dumps(result))
        return
    if k > 2:
        _print_multiclass(predictions, result, bootstrap, ci_method)
        return
    from rich.table import Table

    from medvlm._console import make_console

    table = Table(title=f"{predictions.name}: n = {result['n']} (label 1 positive)", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if bootstrap:
        table.add_column(f"95% CI ({bootstrap} bootstrap, {ci_method})", justify="right")
    table.add_row("TP / FP / TN / FN", f"{result['tp']} / {result['fp']} / {result['tn']} / {result['fn']}",
                  *([""] if bootstrap else []))
    if "n_patients" in result:
        table.add_row("patients (the bootstrap resamples these)", str(result["n_patients"]),
                      *([""] if bootstrap else []))
    if result.get("n_abstained"):
        table.add_row("abstained (no prediction; not in the metrics)",
                      f"{result['n_abstained']} (coverage {_fmt(result['coverage'])})",
                      *([""] if bootstrap else []))
    for key in ("accuracy", "precision", "recall", "specificity", "f1", "balanced_accuracy", "mcc", "auc",
                "brier", "ece", "log_loss", "aurc"):
        label = {"recall": "recall (sensitivity)", "balanced_accuracy": "balanced accuracy",
                 "auc": "ROC AUC", "brier": "Brier score (lower: better)",
                 "ece": "ECE, 10 bins (lower: better)", "log_loss": "log loss (lower: better)",
                 "aurc": "AURC (lower: better)"}.get(key, key)
        row = [label, _fmt(result[key])]
        if bootstrap:
            ci = result.get(f"{key}_ci")
            row.append("n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]")
        table.add_row(*row)
    make_console().print(table)


def _recorded_classes(predictions: Path) -> Any:
    """The classes of the task that wrote ``predictions`` (a :class:`~medvlm.metrics_multiclass.ClassSpec`):
    the task named in the run.json of its folder (registered, else its work folder's, else the names it
    records); None without a readable run.json naming a task."""
    from medvlm.errors import MedVLMError
    from medvlm.metrics_multiclass import ClassSpec
    from medvlm.runinfo import read_run_info
    from medvlm.tasks import get_task, work_task

    info = read_run_info(predictions.parent, strict=False) or {}
    cfg = info.get("config") if isinstance(info.get("config"), dict) else {}
    recorded = cfg.get("task") if isinstance(cfg.get("task"), dict) else {}
    names = recorded.get("classes")
    if not recorded.get("name") or not isinstance(names, list) or len(names) < 2:
        return None
    for find in (lambda: get_task(str(recorded["name"])), lambda: work_task(cfg["work"])):
        try:
            task = find()
        except (MedVLMError, KeyError, TypeError):
            continue
        if list(task.classes) == [str(n) for n in names]:
            return ClassSpec(tuple(task.classes), tuple(task.prob_columns[:task.n_classes]))
    return ClassSpec.from_names([str(n) for n in names])


def _print_multiclass(predictions: Path, result: dict[str, Any], bootstrap: int, ci_method: str) -> None:
    """The multi-class ``metrics`` tables: the summary metrics, the per-class table, the confusion matrix."""
    from rich.table import Table

    from medvlm._console import make_console

    console = make_console()
    table = Table(title=f"{predictions.name}: n = {result['n']}, {result['n_classes']} classes",
                  title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    extra = [""] if bootstrap else []
    if bootstrap:
        table.add_column(f"95% CI ({bootstrap} bootstrap, {ci_method})", justify="right")
    if "n_patients" in result:
        table.add_row("patients (the bootstrap resamples these)", str(result["n_patients"]), *extra)
    if result.get("n_abstained"):
        table.add_row("abstained (no prediction; not in the metrics)",
                      f"{result['n_abstained']} (coverage {_fmt(result['coverage'])})", *extra)
    for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
                       ("macro_f1", "macro F1"), ("auc", "ROC AUC (one-vs-rest, macro)")):
        ci = result.get(f"{key}_ci")
        table.add_row(label, _fmt(result[key]),
                      *([("n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]")] if bootstrap else []))
    console.print(table)
    per = Table(title="per class (one against the rest)", title_justify="left")
    for col in ("class", "support", "precision", "recall (sensitivity)", "specificity", "F1", "ROC AUC"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for row in result["per_class"]:
        name = str(row["label"]) if row["class"] == str(row["label"]) else f"{row['label']} {row['class']}"
        per.add_row(name, str(row["support"]),
                    *(_fmt(row[k]) for k in ("precision", "recall", "specificity", "f1", "auc")))
    console.print(per)
    cm = Table(title="confusion matrix (rows: true class, columns: predicted)", title_justify="left")
    cm.add_column("true \\ predicted")
    for name in result["classes"]:
        cm.add_column(name, justify="right")
    for name, counts in zip(result["classes"], result["confusion"], strict=True):
        cm.add_row(name, *(str(c) for c in counts))
    console.print(cm)


@app.command("calibrate")
def calibrate_cmd(
    fit: Path = typer.Argument(..., help="Predictions (or run folder) to fit on: its val rows (all rows "
                               "without a cohort column)."),
    apply: Path = typer.Argument(..., help="Predictions (or run folder) to calibrate: its test rows."),
    out: Path = typer.Option(..., "--out", callback=out_folder,
        help="Run folder: predictions.csv, metrics.json, calibration.json, run.json."),
    method: str = typer.Option("temperature", "--method", help="temperature | platt | isotonic | none."),
    threshold: str = typer.Option("youden", "--threshold", help="youden | balanced | a number in [0, 1]."),
    fit_cohort: str = typer.Option("val", "--fit-cohort", help="FIT rows used where it has a cohort column."),
    apply_cohort: str = typer.Option("test", "--apply-cohort", help="APPLY rows calibrated (cohort column)."),
    orientation: str = typer.Option("combined", "--orientation", help="VLM predictions: the orientation "
                                    "rows to use (combined: the patient-level vote)."),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0, callback=_resamples,
                                  help="Bootstrap resamples for 95% CIs (0: none; else at least 100)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    abstain: float = typer.Option(None, "--abstain-below", help="Selective prediction: rows whose calibrated "
                                  "confidence is below this are abstentions."),
) -> None:
    """Calibrate a scored run on another run's validation rows: temperature/Platt/isotonic, a fitted
    threshold (Youden, balanced or fixed) and optional selective prediction; a run of kind `calibrated`."""
    from medvlm.calibrate import calibrate

    with _warnings_to_stderr():
        m = calibrate(fit, apply, out, method=method, threshold=threshold, fit_cohort=fit_cohort,
                      apply_cohort=apply_cohort, orientation=orientation, n_boot=bootstrap, seed=seed,
                      abstain_below=abstain)
    cal = json.loads((out / "calibration.json").read_text())
    print(f"{cal['method']} fitted on {cal['n_fit']} rows, threshold {cal['threshold']:.4f} "
          f"({cal['threshold_rule']}); on {m['n']} rows: accuracy {_fmt(m['accuracy'])}, sensitivity "
          f"{_fmt(m['recall'])}, specificity {_fmt(m['specificity'])}, AUC {_fmt(m['auc'])}, ECE "
          f"{_fmt(m['ece'])}, coverage {_fmt(m['coverage'])} -> {out / 'predictions.csv'}")


@app.command("compare")
def compare_cmd(
    a: Path = typer.Argument(..., help="Predictions of model A (patient_id,label,pred[,score][,cohort])."),
    b: Path = typer.Argument(..., help="Predictions of model B, same patients."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Paired comparison on the same patients (test cohort): DeLong for AUC, McNemar for accuracy.
    Two per-call tables (slices.csv): answer agreement, flip rate and Cohen's kappa per call."""
    from medvlm.cli._runs import require_csv_file
    from medvlm.metrics import read_predictions
    from medvlm.stats import compare_predictions

    require_csv_file(a, "A")
    require_csv_file(b, "B")
    if _compare_calls(a, b, as_json=as_json):
        return
    da, db = read_predictions(a), read_predictions(b)
    with _warnings_to_stderr():
        result = compare_predictions(da, db, name_a=str(a), name_b=str(b))
    if as_json:
        print(json.dumps(result))
        return
    from rich.table import Table

    from medvlm._console import make_console

    units = (f"{result['n']} {result.get('unit', 'slice')}s of {result['n_patients']} patients"
             if "n_patients" in result
             else f"{result['n']} patients")
    table = Table(title=f"A = {a}, B = {b}: {units}", title_justify="left")
    table.add_column("")
    table.add_column("A", justify="right")
    table.add_column("B", justify="right")
    table.add_column("A - B [95% CI]", justify="right")

    def ci(v: list[float] | None) -> str:
        return "" if v is None else f" [{v[0]:.3f}, {v[1]:.3f}]"

    table.add_row("ROC AUC", _fmt(result["auc_a"]), _fmt(result["auc_b"]),
                  _fmt(result["auc_diff"]) + ci(result["auc_diff_ci"]))
    table.add_row("accuracy", _fmt(result["accuracy_a"]), _fmt(result["accuracy_b"]),
                  _fmt(result["accuracy_diff"]) + ci(result["accuracy_diff_ci"]))
    console = make_console()
    console.print(table)
    if result["auc_a"] is None or result["auc_b"] is None:
        console.print("DeLong: n/a (needs a score for every patient in both files and both classes)")
    else:
        console.print(f"DeLong (AUC): z = {_fmt(result['delong_z'])}, p = {_fmt(result['delong_p'], 4)}")
    if result.get("n_dropped_abstained"):
        console.print(f"left out: {result['n_dropped_abstained']} unit(s) one of the models did not answer")
    if result.get("note"):
        console.print(f"note: {result['note']}")
    console.print(f"McNemar (accuracy, {result['mcnemar_method']}): "
                  f"b = {result['mcnemar_b']} (A right, B wrong), "
                  f"c = {result['mcnemar_c']} (A wrong, B right), p = {_fmt(result['mcnemar_p'], 4)}")


def _header(path: Path) -> list[str]:
    """The CSV header of ``path`` ([] when unreadable: the usual reader then says why)."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _compare_calls(a: Path, b: Path, *, as_json: bool) -> bool:
    """``compare`` on two per-call tables (slices.csv): print the answer agreement and return True;
    False when neither file is one (patient-level compare); DataError when only one is."""
    from medvlm.call_stats import call_keys, compare_answers, is_call_table, read_calls
    from medvlm.errors import DataError

    calls = [is_call_table(_header(p)) for p in (a, b)]
    if not any(calls):
        return False
    if not all(calls):
        one, other = (a, b) if calls[0] else (b, a)
        raise DataError(f"{one} is a per-call table (slices.csv) but {other} is not; compare two slices.csv "
                        "files, or two predictions.csv files")
    table_a = read_calls(a)
    with _warnings_to_stderr():
        result = compare_answers(table_a, read_calls(b), name_a=str(a), name_b=str(b))
    if as_json:
        print(json.dumps(result))
        return True
    print(f"A = {a}, B = {b}: {result['n']} calls of {result['n_patients']} patients, paired on "
          f"{', '.join(call_keys(table_a.columns) or [])}")
    print(f"agreement {_fmt(result['agreement'])}, flip rate {_fmt(result['flip_rate'])}, "
          f"Cohen's kappa {_fmt(result['kappa'])} (an unparsed answer is a category of its own)")
    corner = "A \\ B"
    width = max(len(str(v)) for v in [*result["categories"], result["n"]])
    first = max(len(corner), width) + 2
    print(corner.ljust(first) + " ".join(c.rjust(width) for c in result["categories"]))
    for x, row in result["confusion"].items():
        print(x.ljust(first) + " ".join(str(v).rjust(width) for v in row.values()))
    return True


def _warn_problems(run: Path, problems: list[str]) -> None:
    """One stderr line for a run the report shows with problems (damaged files): the first, and how many."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    first = " ".join(problems[0].split())
    print(f"medvlm: warning: {run}: {first}{more}; shown with its problems", file=sys.stderr)


@app.command("report")
def report_cmd(
    runs: list[Path] = typer.Argument(..., help="Run folders (each with run.json)."),
    out: Path = typer.Option(Path("report.html"), "--out", callback=out_file, help="The HTML file to write."),
    title: str = typer.Option("medvlm report", "--title", help="Title of the page."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0,
                                  help="Bootstrap resamples for CIs the run files do not already hold."),
) -> None:
    """One self-contained HTML page comparing the runs (tables, paired tests, figures, details), with the
    study sections (cohorts, summary, limitations, reproducibility) of the work folder each run names. A
    run folder without run.json, with a run.json status other than complete, or without its final files
    (predictions.csv, ...) is named on stderr and left out."""
    from medvlm.cli._runs import finished_runs, unique_runs
    from medvlm.errors import DataError
    from medvlm.report.html import build_report
    from medvlm.report.work_sections import study_sections

    kept, left_out = finished_runs(unique_runs(list(runs)))
    if not kept:
        raise DataError("no finished run to report: " + "; ".join(f"{r}: {why}" for r, why in left_out))
    for run, why in left_out:
        print(f"medvlm: warning: left out of the report: {run}: {why}", file=sys.stderr)
    with _warnings_to_stderr():
        path = build_report(kept, out, title=title, n_boot=bootstrap, extra_sections=study_sections(kept),
                            on_problems=_warn_problems)
    print(f"wrote {path}")
