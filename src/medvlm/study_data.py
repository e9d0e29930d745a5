"""The data stages of a study (:mod:`medvlm.study`): synthetic cohort or data check, prepare, split, and
the tiny stand-in VLM. Each is a call of the library function behind one command; its summary goes to
``out/experiment.json``. Class counts use the task's class names (``task:`` in the config)."""

from __future__ import annotations

from typing import Any

from medvlm.study_paths import StageRecord, _Paths


def _stage_data(p: _Paths, progress: bool) -> StageRecord:
    from medvlm.data.brats import discover

    cfg = p.config.data
    if cfg.synthetic is not None and cfg.synthetic.kind == "cxr":
        from medvlm.data.synth_cxr import synth_cxr

        images = synth_cxr(p.data, patients=cfg.synthetic.patients, seed=cfg.synthetic.seed,
                           size=cfg.synthetic.size)
        return StageRecord("data", summary={
            "source": "synthetic cxr", "patients": cfg.synthetic.patients, "images": len(images),
            "lesion": sum(i.label for i in images), "size": cfg.synthetic.size},
            outputs={"data": str(p.data)})
    if cfg.synthetic is None and p.config.task.lower().endswith((".yaml", ".yml")):  # images, not BraTS
        if not p.data.is_dir():
            from medvlm.errors import DataError

            raise DataError(f"data.path {p.data}: no such folder")
        return StageRecord("data", summary={"source": str(p.data)}, outputs={"data": str(p.data)})
    if cfg.synthetic is not None:
        from medvlm.data.synth import synth_cohort

        infos = synth_cohort(p.data, patients=cfg.synthetic.patients, lgg_fraction=cfg.synthetic.lgg_fraction,
                             seed=cfg.synthetic.seed, size=cfg.synthetic.size, progress=progress)
        return StageRecord("data", summary={
            "source": "synthetic", "patients": len(infos), **_class_counts(infos, p.config.task),
            "atypical": sum(bool(i.atypical) for i in infos), "size": cfg.synthetic.size},
            outputs={"data": str(p.data)})
    training, _grades, patients = discover(p.data)
    return StageRecord("data", summary={"source": str(training), "patient_folders": len(patients)},
                       outputs={"data": str(training)})


def _class_counts(infos: list[Any], task_name: str) -> dict[str, Any]:
    """Patients per class of the synthetic cohort, keyed by the task's class names in lower case when
    the patients' grades are the task's classes (``brats-grading``: ``lgg``, ``hgg``); otherwise, e.g.
    for a slice-level task whose classes no patient has, ``grades``: patients per grade."""
    from collections import Counter

    from medvlm.tasks import get_task

    classes = get_task(task_name).classes
    grades = Counter(str(i.grade) for i in infos)
    by_name = {c.lower(): c for c in classes}
    if all(g.lower() in by_name for g in grades):
        return {c.lower(): sum(n for g, n in grades.items() if g.lower() == c.lower()) for c in classes}
    return {"grades": dict(sorted(grades.items()))}


def _stage_prepare(p: _Paths, progress: bool) -> StageRecord:
    from medvlm.tasks import prepare_work

    cfg = p.config.prepare
    result = prepare_work(p.data, p.work, p.task(), shape=cfg.shape, workers=cfg.workers,
                          margin_mm=cfg.margin_mm, progress=progress)
    from medvlm.data.prepare_summary import prepare_summary
    from medvlm.tasks import work_task

    return StageRecord("prepare", summary=prepare_summary(result, work_task(result.work), shape=cfg.shape),
                       outputs={"manifest": str(p.work / "manifest.csv")})


def _stage_split(p: _Paths, progress: bool) -> StageRecord:
    import warnings

    from medvlm.data.split import make_split

    cfg = p.config.split
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        split = make_split(p.work, test_fraction=cfg.test_fraction, folds=cfg.folds, seed=cfg.seed)
    return StageRecord("split", summary={
        "test": len(split["test"]), "folds": [f"{len(f['train'])}/{len(f['val'])}" for f in split["folds"]],
        "warnings": [str(w.message) for w in caught]}, outputs={"splits": str(p.work / "splits.json")})


def _stage_tiny(p: _Paths, progress: bool) -> StageRecord:
    from medvlm.vlm.tiny import make_tiny_vlm

    make_tiny_vlm(p.tiny, seed=0)
    return StageRecord("tiny-vlm", summary={"note": "tiny Llama-3.2-Vision-architecture stand-in for a "
                       "real VLM, trained only to answer in the study's format (mostly answer 1, whatever "
                       "the image): it was taught no class"},
                       outputs={"model": str(p.tiny)})
