"""``medvlm synth``, ``medvlm prepare`` and ``medvlm split``: the Data section of docs/cli.md."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import typer

from medvlm.cli._app import app, out_folder


@app.command("synth")
def synth_cmd(
    out: Path = typer.Argument(..., callback=out_folder,
        help="Folder to write MICCAI_BraTS2020_TrainingData/ into (--task cxr: images/, labels.csv, "
             "cxr.yaml)."),
    patients: int = typer.Option(40, "--patients", help="Number of patients."),
    lgg_fraction: float = typer.Option(0.2, "--lgg-fraction", help="Share of LGG patients (label 0)."),
    seed: int = typer.Option(0, "--seed", help="Seed: same seed, same bytes."),
    size: str = typer.Option(
        "full", "--size", help="full: 240x240x155 at 1 mm; medium: 120x120x78 at 2 mm; small: 48x48x31, 5 mm."
    ),
    gzip_files: bool = typer.Option(True, "--gzip/--no-gzip", help="Write .nii.gz (default) or .nii."),
    task: str = typer.Option("brats", "--task", help="brats (default: BraTS volumes, for brats-grading and "
                             "brats-tumour) or cxr (2D chest-radiograph-like images, lesion or not, with "
                             "their task file cxr.yaml; --size: 256, 128 or 64 pixels)."),
) -> None:
    """Write a synthetic BraTS 2020 cohort (MNI152 anatomy, implanted HGG/LGG-like tumours), or with
    --task cxr a synthetic 2D image cohort."""
    from medvlm.registry import check_choice

    check_choice("--task", task, ["brats", "brats-grading", "brats-tumour", "cxr"])
    if task == "cxr":
        from medvlm.data.synth_cxr import TASK_FILE, synth_cxr

        images = synth_cxr(out, patients=patients, seed=seed, size=size)
        n_lesion = sum(i.label for i in images)
        n_dicom = sum(i.path.endswith(".dcm") for i in images)
        print(f"wrote {len(images)} images of {patients} patients ({n_lesion} lesion, "
              f"{len(images) - n_lesion} no-lesion; {n_dicom} DICOM) to {out}; task: {out / TASK_FILE}")
        return
    from medvlm.data.synth import synth_cohort

    infos = synth_cohort(out, patients=patients, lgg_fraction=lgg_fraction, seed=seed, size=size,
                         gzip_files=gzip_files)
    n_lgg = sum(i.grade == "LGG" for i in infos)
    n_atyp = sum(i.atypical for i in infos)
    print(f"wrote {len(infos)} patients ({len(infos) - n_lgg} HGG, {n_lgg} LGG, {n_atyp} atypical) to "
          f"{out / 'MICCAI_BraTS2020_TrainingData'}")


@app.command("prepare")
def prepare_cmd(
    data: Path = typer.Argument(..., help="The BraTS 2020 training folder or its parent (a YAML task: "
                                "the folder its source paths are relative to)."),
    out: Path = typer.Option(..., "--out", callback=out_folder, help="Work folder (manifest.csv, volumes/)."),
    shape: tuple[int, int, int] = typer.Option((95, 128, 128), "--shape", help="D H W of the volumes."),
    workers: str = typer.Option("1", "--workers", help="Patients (images) prepared in parallel processes; "
                                "auto: one per CPU."),
    margin: float = typer.Option(10.0, "--margin", help="Margin around the tumour box, in mm."),
    task: str = typer.Option("brats-grading", "--task", help="The task to prepare for (`medvlm tasks`) or "
                             "a task YAML file (2D images; its source paths relative to DATA); WORK "
                             "records it and every later command reads it from there."),
) -> None:
    """Normalise, crop (around the tumour, or the whole brain for brats-tumour) and resize every patient;
    write manifest.csv, volumes/ and task.json."""
    from medvlm.data.image_prepare import resolve_workers
    from medvlm.tasks import prepare_work, work_task

    with warnings.catch_warnings(record=True) as caught:  # notes of the source: one line each
        warnings.simplefilter("always", UserWarning)
        result = prepare_work(data, out, task, shape=shape, workers=resolve_workers(workers),
                              margin_mm=margin)
    for w in caught:
        print(f"medvlm: warning: {w.message}", file=sys.stderr)
    prepared = work_task(result.work)
    if prepared.unit == "image":  # no volume shape: what was prepared, its size and classes
        from medvlm.data.prepare_summary import prepare_summary

        done = prepare_summary(result, prepared, shape=shape)
        print(f"{done['images']} images prepared ({done['reused']} reused), {done['skipped']} skipped; "
              f"size {done['size']}; classes {done['classes']} -> {result.work / 'manifest.csv'}")
    else:
        print(f"{result.n_ok} ok ({result.n_reused} reused), {result.n_skipped} skipped -> "
              f"{result.work / 'manifest.csv'}")
    if result.rebuilt:
        from medvlm.data.prepare_state import summarise_reasons

        print(f"  prepared again: {summarise_reasons(result.rebuilt)}", file=sys.stderr)
    for pid, reason in result.skipped():
        print(f"  skipped {pid}: {reason}", file=sys.stderr)


@app.command("split")
def split_cmd(
    work: Path = typer.Argument(..., callback=out_folder, help="Work folder written by `medvlm prepare`."),
    test_fraction: float = typer.Option(0.15, "--test-fraction", help="Share of patients held out for test."),
    folds: int = typer.Option(5, "--folds", help="Stratified folds over the remaining patients."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split."),
) -> None:
    """Stratified by-patient split: a test set, then k folds; writes WORK/splits.json."""
    from medvlm.data.split import make_split

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        split = make_split(work, test_fraction=test_fraction, folds=folds, seed=seed)
    for w in caught:
        print(f"medvlm: warning: {w.message}", file=sys.stderr)
    sizes = ", ".join(f"{len(f['train'])}/{len(f['val'])}" for f in split["folds"])
    print(f"test {len(split['test'])}, folds (train/val) {sizes} -> {work / 'splits.json'}")


@app.command("tasks")
def tasks_cmd(
    as_json: bool = typer.Option(False, "--json", help="One JSON list of task objects on stdout."),
    tasks_dir: Path | None = typer.Option(None, "--tasks-dir", help="Also list the task YAML files of "
                                          "this folder (their `file`; a file that is not a task: its error "
                                          "on stderr)."),
) -> None:
    """List the registered tasks: name, classes (label order), positive class, unit."""
    import json

    from medvlm.tasks import all_tasks

    tasks = [t.describe() for t in all_tasks()]
    if tasks_dir is not None:
        from medvlm.tasks.yaml_task import duplicate_names, find_yaml_tasks

        listed = find_yaml_tasks(tasks_dir)
        for path, found in listed:
            if isinstance(found, Exception):
                print(f"medvlm: warning: {found}", file=sys.stderr)
            else:
                tasks.append({**found.describe(), "file": str(path)})
        for warning in duplicate_names(listed):
            print(f"medvlm: warning: {warning}", file=sys.stderr)
    if as_json:
        print(json.dumps(tasks, indent=2))
        return
    for t in tasks:
        classes = ", ".join(f"{i} {c}" for i, c in enumerate(t["classes"]))
        print(f"{t['name']:<16} unit {t['unit']:<8} classes {classes} (positive: {t['positive']})")
        print(f"{'':<16} {t['description']}")
        print(f"{'':<16} prompts: {', '.join(t['prompts'])}")
