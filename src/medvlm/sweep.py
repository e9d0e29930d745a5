"""Hyper-parameter sweeps on a cluster: folds x learning rates as one submitit job array.

``submit_sweep(work, sweep, config)`` plans one job per (fold, learning rate), submits them with
``submitit.AutoExecutor(...).map_array`` (Slurm, or the local executor for tests and single machines)
and writes ``SWEEP/sweep.json``. Each job calls the library function of the step:

- ``what="cnn"``: :func:`medvlm.cnn.train.train_cnn` with ``fold=k, lr=x`` into
  ``SWEEP/cnn-fold<k>-lr<x>/`` (a run folder as ``train-cnn`` writes it);
- ``what="finetune"``: :func:`medvlm.finetune.train.finetune` with ``fold=k, lr=x`` into
  ``SWEEP/finetune-fold<k>-lr<x>/`` (an adapter folder as ``finetune`` writes it).

Both resume, so resubmitting the same sweep continues unfinished jobs. ``collect_sweep(sweep)`` reads
each job's files (and, for failed jobs, submitit's result pickle) into ``SWEEP/summary.csv``: one row
per job with its state (``done``, ``failed``, ``pending``) and validation/test metrics. Labels as the
work folder's task defines them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medvlm.errors import ConfigError, DataError

WHAT = ("cnn", "finetune")
EXECUTORS = ("slurm", "local")
#: ``summary.csv`` columns before the metric columns
SUMMARY_KEYS = ["name", "what", "fold", "lr", "folder", "job_id", "state", "error"]
#: metrics gathered per job (``val_*``: the fold's validation cohort; ``test_*``: the test cohort)
CNN_METRICS = ["val_auc", "val_accuracy", "val_balanced_accuracy", "val_f1", "test_auc", "test_accuracy",
               "test_balanced_accuracy", "test_f1", "best_epoch", "epochs_trained"]
FINETUNE_METRICS = ["val_p_true", "val_nll", "val_accuracy", "val_balanced_accuracy",
                    "val_patient_balanced_accuracy", "selected_epoch", "steps"]


class SweepConfig(BaseModel):
    """What to sweep and where to run it.

    ``folds``: fold numbers or ``"all"`` (every fold of ``splits.json``); ``lrs``: learning rates;
    ``options``: further options of the step's config (:class:`medvlm.cnn.config.CNNConfig` or
    :class:`medvlm.finetune.config.FinetuneConfig`; ``fold`` and ``lr`` are set per job).
    Cluster: ``partition``, ``time_min`` (wall-clock limit per job), ``gpus`` per job, ``cpus`` per job,
    ``mem_gb`` per job, ``array_parallelism`` (jobs of the array running at once; Slurm ``%N``),
    ``slurm_extra`` (more ``#SBATCH`` options, e.g. ``{"account": "lab", "qos": "high"}``).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: one line, exit 2

    what: Literal["cnn", "finetune"] = "cnn"
    folds: list[int] | Literal["all"] = "all"
    lrs: list[float] = Field(default_factory=lambda: [1e-4])
    options: dict[str, Any] = Field(default_factory=dict)
    executor: Literal["slurm", "local"] = "slurm"
    partition: str | None = None
    time_min: int = Field(120, ge=1)
    gpus: int = Field(1, ge=0)
    cpus: int = Field(4, ge=1)
    mem_gb: float = Field(32, gt=0)
    array_parallelism: int = Field(64, ge=1)
    slurm_extra: dict[str, Any] = Field(default_factory=dict)


def lr_tag(lr: float) -> str:
    """A short, exact learning-rate tag for folder names.

    >>> lr_tag(1e-4), lr_tag(3e-4), lr_tag(2.5e-05), lr_tag(0.01), lr_tag(1.0)
    ('1e-4', '3e-4', '2.5e-5', '1e-2', '1e0')
    """
    mantissa, exponent = f"{lr:.12e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def parse_folds(text: str) -> list[int] | Literal["all"]:
    """``"all"`` or a comma list of fold numbers (ConfigError naming ``--folds`` otherwise).

    >>> parse_folds("all"), parse_folds("0,2")
    ('all', [0, 2])
    """
    text = text.strip()
    if text == "all":
        return "all"
    try:
        folds = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"--folds must be 'all' or fold numbers like 0,1; got {text!r}") from None
    if not folds or min(folds) < 0:
        raise ConfigError(f"--folds must be 'all' or fold numbers like 0,1; got {text!r}")
    return list(dict.fromkeys(folds))


def parse_lrs(text: str) -> list[float]:
    """Comma list of positive learning rates (ConfigError naming ``--lr`` otherwise).

    >>> parse_lrs("1e-4,3e-4")
    [0.0001, 0.0003]
    """
    try:
        lrs = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"--lr must be learning rates like 1e-4,3e-4; got {text!r}") from None
    if not lrs or min(lrs) <= 0:
        raise ConfigError(f"--lr must be positive learning rates like 1e-4,3e-4; got {text!r}")
    return list(dict.fromkeys(lrs))


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value) with the value read as JSON when it parses (``5``, ``true``,
    ``[\"axial\"]``), else as a string.

    >>> parse_option("epochs=5"), parse_option("model=small3d"), parse_option("augment=true")
    (('epochs', 5), ('model', 'small3d'), ('augment', True))
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--option must look like key=value; got {text!r}")
    try:
        return key.strip().replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.strip().replace("-", "_"), value


# ------------------------------------------------------------------------------------------- planning
def resolve_sweep_folds(work: str | Path, folds: list[int] | Literal["all"]) -> list[int]:
    """Fold numbers to run, checked against ``WORK/splits.json`` (DataError/ConfigError naming it)."""
    from medvlm.data.cohorts import read_splits

    n = len(read_splits(work)["folds"])
    if n == 0:
        raise DataError(f"{Path(work) / 'splits.json'}: the split has no fold; run `medvlm split --folds K`")
    if folds == "all":
        return list(range(n))
    bad = [k for k in folds if not 0 <= k < n]
    if bad:
        raise ConfigError(f"--folds {bad[0]}: {Path(work) / 'splits.json'} has folds 0..{n - 1}")
    return list(folds)


def job_config(what: str, options: dict[str, Any], fold: int, lr: float) -> Any:
    """The step's validated config for one job (ConfigError naming the bad option)."""
    opts = {**options, "fold": fold, "lr": lr}
    if what == "cnn":
        opts.setdefault("progress", False)
    try:
        if what == "cnn":
            from medvlm.cnn.config import make_config

            return make_config(**opts)
        from medvlm.finetune.config import FinetuneConfig

        return FinetuneConfig(**opts)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise ConfigError(f"sweep --option {where}: {err['msg']} (got {err.get('input')!r})") from None


def plan_sweep(work: str | Path, sweep: str | Path, config: SweepConfig) -> list[dict[str, Any]]:
    """One job per (fold, lr): ``{"name", "what", "fold", "lr", "folder"}`` (folder absolute).

    Every job's config is validated here, before anything is submitted.
    """
    folds = resolve_sweep_folds(work, config.folds)
    if not config.lrs:
        raise ConfigError("--lr: give at least one learning rate")
    sweep = Path(sweep).expanduser().resolve()
    jobs = []
    for fold in folds:
        for lr in config.lrs:
            job_config(config.what, config.options, fold, lr)
            name = f"{config.what}-fold{fold}-lr{lr_tag(lr)}"
            jobs.append({"name": name, "what": config.what, "fold": fold, "lr": lr,
                         "folder": str(sweep / name)})
    return jobs


def run_job(what: str, work: str, folder: str, options: dict[str, Any], fold: int, lr: float
            ) -> dict[str, Any]:
    """Body of one sweep job (runs on the cluster node): the library function, then a small summary.

    Returns (and writes to ``folder/job.json``) ``{"what", "fold", "lr", "folder", "metrics"}`` where
    ``metrics`` is :func:`job_metrics` of the finished folder.
    """
    from medvlm._io import write_json_atomic

    config = job_config(what, options, fold, lr)
    if what == "cnn":
        from medvlm.cnn.train import train_cnn

        train_cnn(work, folder, config)
    else:
        from medvlm.finetune.train import finetune

        finetune(work, folder, config)
    summary = {"what": what, "fold": fold, "lr": lr, "folder": folder, "metrics": job_metrics(what, folder)}
    write_json_atomic(Path(folder) / "job.json", summary)
    return summary


def _executor(config: SweepConfig, logs: Path, job_name: str) -> Any:
    from medvlm.errors import require

    require("submitit", "slurm")
    import submitit

    if config.executor == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("--executor slurm: no `sbatch` on this machine; submit from the cluster's login "
                          "node, or use --executor local")
    try:
        executor = submitit.AutoExecutor(folder=str(logs / "%j"), cluster=config.executor)
    except RuntimeError as exc:  # submitit: "Could not detect srun ..."
        raise ConfigError(f"--executor {config.executor}: {exc}") from None
    params: dict[str, Any] = {"name": job_name, "timeout_min": config.time_min, "cpus_per_task": config.cpus,
                              "mem_gb": config.mem_gb}
    if config.gpus:
        params["gpus_per_node"] = config.gpus
    if config.executor == "slurm":
        params["slurm_array_parallelism"] = config.array_parallelism
        if config.partition:
            params["slurm_partition"] = config.partition
        if config.slurm_extra:
            params["slurm_additional_parameters"] = dict(config.slurm_extra)
    if config.executor == "local":  # the local executor knows no cpus/mem limits
        params.pop("cpus_per_task")
        params.pop("mem_gb")
        if config.gpus:
            params.pop("gpus_per_node")
    executor.update_parameters(**params)
    return executor


def submit_sweep(work: str | Path, sweep: str | Path, config: SweepConfig, *, wait: bool = False
                 ) -> dict[str, Any]:
    """Plan and submit the sweep as one job array; write and return ``SWEEP/sweep.json``.

    ``sweep.json``: ``{"work", "what", "executor", "config", "logs", "jobs": [{"name", "what", "fold",
    "lr", "folder", "job_id"}]}``. With ``wait``, block until every job ended and then
    :func:`collect_sweep` (``summary.csv``); a failed job does not raise here, it shows in the summary.
    """
    from medvlm._io import write_json_atomic
    from medvlm.vlm._secrets import redact_record

    work = Path(work).expanduser().resolve()
    if not work.is_dir():
        raise DataError(f"{work}: work folder not found (run `medvlm prepare` and `medvlm split` first)")
    sweep = Path(sweep).expanduser().resolve()
    jobs = plan_sweep(work, sweep, config)
    sweep.mkdir(parents=True, exist_ok=True)
    logs = sweep / "submitit"
    executor = _executor(config, logs, f"medvlm-{config.what}")
    submitted = executor.map_array(
        run_job, [config.what] * len(jobs), [str(work)] * len(jobs), [j["folder"] for j in jobs],
        [config.options] * len(jobs), [j["fold"] for j in jobs], [j["lr"] for j in jobs])
    for job, handle in zip(jobs, submitted, strict=True):
        job["job_id"] = str(handle.job_id)
    record = {"work": str(work), "what": config.what, "executor": config.executor,
              "config": redact_record(config.model_dump(mode="json")), "logs": str(logs), "jobs": jobs}
    write_json_atomic(sweep / "sweep.json", record)
    if wait:
        for handle in submitted:
            handle.wait()
        collect_sweep(sweep)
    return record


# ------------------------------------------------------------------------------------------ collecting
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def job_metrics(what: str, folder: str | Path) -> dict[str, Any] | None:
    """The metrics of one finished job folder, or None when it has none yet.

    cnn: from ``metrics.json`` of the fold's run (``val_*`` of its validation cohort, ``test_*`` of the
    test cohort, best epoch, epochs trained); finetune: ``val`` of ``finetune_config.json`` (the
    selected epoch) plus ``selected_epoch`` and ``steps``.
    """
    folder = Path(folder)
    if what == "cnn":
        metrics = _read_json(folder / "metrics.json")
        if not metrics or not metrics.get("folds"):
            return None
        fold, per = next(iter(metrics["folds"].items()))
        out: dict[str, Any] = {}
        for cohort in ("val", "test"):
            leaf = per.get(cohort) or {}
            for key in ("auc", "accuracy", "balanced_accuracy", "f1"):
                out[f"{cohort}_{key}"] = leaf.get(key)
        training = (metrics.get("training") or {}).get(fold) or {}
        out["best_epoch"] = training.get("best_epoch")
        out["epochs_trained"] = training.get("epochs_trained")
        return out
    info = _read_json(folder / "finetune_config.json")
    if not info:
        return None
    val = info.get("val") or {}
    out = {k: val.get(k) for k in FINETUNE_METRICS if k.startswith("val_")}
    out["selected_epoch"] = info.get("selected_epoch")
    out["steps"] = info.get("steps")
    return out


def _job_error(logs: Path, job_id: str) -> str | None:
    """The first line of a failed job's error from submitit's result pickle (None if none/success)."""
    from submitit.core import utils

    try:
        paths = utils.JobPaths(logs / "%j", job_id=job_id)
        if not paths.result_pickle.exists():
            return None
        outcome, value = utils.pickle_load(paths.result_pickle)
    except Exception:  # noqa: BLE001 - an unreadable pickle means we know nothing more
        return None
    if outcome == "success":
        return None
    lines = [ln for ln in str(value).strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "failed"


def collect_sweep(sweep: str | Path) -> Any:
    """Gather every job of ``SWEEP/sweep.json`` into ``SWEEP/summary.csv`` and return it (DataFrame).

    One row per job: :data:`SUMMARY_KEYS` then the metric columns of the step (:data:`CNN_METRICS` or
    :data:`FINETUNE_METRICS`). ``state``: ``done`` (metrics found), ``failed`` (submitit recorded an
    error; ``error`` holds its last line) or ``pending`` (neither yet).
    """
    import pandas as pd

    from medvlm._io import write_text_atomic

    sweep = Path(sweep).expanduser().resolve()
    record = _read_json(sweep / "sweep.json")
    if record is None:
        raise DataError(f"{sweep / 'sweep.json'}: not found or not JSON; submit the sweep first")
    logs = Path(record.get("logs") or sweep / "submitit")
    what = record["what"]
    columns = SUMMARY_KEYS + (CNN_METRICS if what == "cnn" else FINETUNE_METRICS)
    rows = []
    for job in record["jobs"]:
        metrics = job_metrics(what, job["folder"])
        error = None if metrics else _job_error(logs, job.get("job_id", ""))
        state = "done" if metrics else ("failed" if error else "pending")
        rows.append({**{k: job.get(k) for k in ("name", "what", "fold", "lr", "folder", "job_id")},
                     "state": state, "error": error or "", **(metrics or {})})
    frame = pd.DataFrame(rows, columns=columns)
    write_text_atomic(sweep / "summary.csv", frame.to_csv(index=False))
    return frame


__all__ = ["SweepConfig", "collect_sweep", "job_metrics", "lr_tag", "parse_folds", "parse_lrs",
           "parse_option", "plan_sweep", "run_job", "submit_sweep"]
