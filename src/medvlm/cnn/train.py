"""Training and scoring of the CNN baseline (``medvlm train-cnn``), as library functions.

Entry point: :func:`train_cnn` ``(work, out, config) -> metrics dict``. Labels 0/1 as the
work folder's task defines them; the network outputs one logit per item (a volume, or a 2D slice for a
slice-level task) and ``sigmoid(logit)`` = P(label 1); ``pred = P(label 1) >= 0.5``. A task with K > 2
classes (labels 0..K-1): K logits, cross-entropy, ``pred`` = the argmax of the class probabilities and
one probability column per class in predictions.csv (:mod:`medvlm.cnn.multiclass`).

What a run folder ``RUN`` holds:

- ``fold<k>/last.pt``: everything needed to resume after the last finished epoch (model, optimiser,
  scheduler, AMP scaler, torch/CUDA/numpy/python RNG states, history, best epoch and value), written
  atomically after every epoch; ``fold<k>/best.pt``: the weights of the best epoch by
  ``select_metric``; ``fold<k>/predictions.csv``: that fold's chosen checkpoint on train, val, test.
  Checkpoints are plain tensors and types, loaded with ``torch.load(weights_only=True)``.
- ``history.csv``: one row per fold and epoch (:data:`HISTORY_COLUMNS`); ``train_*`` are running
  values over the epoch's (oversampled, augmented) training stream, ``val_*`` from a full pass over
  the validation cohort after the epoch.
- ``predictions.csv``: ``patient_id,cohort,label,pred,score,fold`` (K > 2 classes: the task's
  probability columns ``p_<class>`` between ``score`` and ``fold``, as a VLM run writes them). With one
  fold: the chosen checkpoint on that fold's train, val and test cohorts (``fold`` = k). With
  ``fold="all"``: one row per patient: every non-test patient once, as its *out-of-fold* prediction
  (cohort ``val``, ``fold`` = the fold whose model did not train on it), and every test patient once,
  scored by the *ensemble* of the fold models (mean P(label 1); ``fold`` = ``ensemble``). So ``medvlm
  compare`` and the report, which join on ``patient_id`` in the test cohort, see one test prediction per
  patient. Each fold's own train/val/test predictions stay in ``fold<k>/predictions.csv``.
- ``metrics.json``: ``{"model", "folds": {"k": {"train", "val", "test"}}, "cv", "test", ...}`` where
  each cohort leaf is :func:`medvlm.metrics.binary_metrics` plus the ``_ci`` keys of
  :func:`medvlm.metrics.bootstrap_metrics` (K > 2 classes: the multi-class metrics of
  :func:`medvlm.predictions.predictions_metrics`: macro AUC, per class, K x K confusion); ``cv`` = mean
  and sample standard deviation (ddof 1; null for one fold) over folds of the val and test metrics;
  ``test`` = metrics of the test rows of ``predictions.csv`` (the fold's model, or the ensemble);
  ``oof_val`` (fold all) = metrics of the out-of-fold predictions; ``training`` = per-fold best epoch,
  epochs trained, early stop; ``notes`` = the metric warnings (undefined metrics, bootstrap resamples
  left out), one line each.
- ``run.json`` (kind ``cnn``; K > 2 classes: with the task's description), ``learning_curve.png`` when
  the report's figure function is present.

Resuming: rerunning with the same ``RUN`` continues each fold after its last finished epoch; a larger
``epochs`` extends a finished run; options that change training (model, lr, batch size, seed, ...)
must match the checkpoint. Randomness is a function of (seed, fold, epoch, item) plus the restored
global RNG states, so on CPU a resumed run reproduces an uninterrupted one exactly.

Data-parallel training: under ``torchrun --nproc-per-node N`` (env ``WORLD_SIZE`` > 1) the run is
DistributedDataParallel; see :func:`train_cnn` and :mod:`medvlm.cnn.distributed`.

The pieces: options in :mod:`medvlm.cnn.config`, the epoch loop in :mod:`medvlm.cnn.loop`, checkpoints
and RNG states in :mod:`medvlm.cnn.checkpoints`, folds, scoring and metrics in :mod:`medvlm.cnn.folds`,
K > 2 classes in :mod:`medvlm.cnn.multiclass`, the checks before writing, run.json, history.csv and the
learning curve in :mod:`medvlm.cnn.runfolder`, data parallelism in :mod:`medvlm.cnn.distributed`; this
module trains a fold and runs the whole thing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm._io import write_json_atomic, write_text_atomic
from medvlm.cnn.checkpoints import (
    CHECKPOINT_FORMAT,
    _check_resume,
    get_rng_state,
    load_checkpoint,
    load_weights,
    restore_training,
    save_checkpoint,
)
from medvlm.cnn.config import CNNConfig, check_choices, make_config
from medvlm.cnn.distributed import (
    _barrier,
    _broadcast,
    active_env,
    distributed_env,
    process_group,
    wrap_model,
)
from medvlm.cnn.folds import (
    combine_predictions,
    fold_cohorts,
    fold_metrics,
    resolve_folds,
    run_metrics,
    score_cohorts,
)
from medvlm.cnn.loop import (
    autocast_dtype,
    make_loader,
    make_optimizer,
    make_scheduler,
    predict,
    resolve_device,
    resolve_workers,
    train_one_epoch,
)
from medvlm.cnn.multiclass import epoch_metrics, n_outputs
from medvlm.cnn.progress import _fmt, _Reporter
from medvlm.cnn.runfolder import (
    HISTORY_COLUMNS,
    input_shape_of,
    learning_curve,
    preflight,
    run_config,
    write_history,
)
from medvlm.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import torch

# the documented entry points (see medvlm.cnn): CNNConfig and make_config live in medvlm.cnn.config
__all__ = ["HISTORY_COLUMNS", "CNNConfig", "make_config", "preflight", "train_cnn", "train_fold"]


def _select_value(row: dict[str, Any], metric: str) -> tuple[float, float]:
    """The selection metric of a history row where larger is better (None -> -inf), then the negative
    validation loss as tie-breaker: a saturated metric (val AUC 1.0 from epoch 2 on a small cohort)
    then picks the better-calibrated epoch, not the first one."""

    def larger_is_better(name: str) -> float:
        value = row.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return -math.inf
        return -float(value) if name == "val_loss" else float(value)

    return larger_is_better(metric), larger_is_better("val_loss")


# ------------------------------------------------------------------------------------------- one fold
def train_fold(work: Path, run: Path, fold: int, config: CNNConfig, *, device: torch.device,
               reporter: _Reporter, on_epoch: Callable[[list[dict[str, Any]]], None] | None = None
               ) -> dict[str, Any]:
    """Train (or resume) fold ``fold`` up to ``config.epochs``; score its chosen checkpoint.

    Returns ``{"history", "predictions" (DataFrame), "best_epoch", "best_value", "epochs_trained",
    "stopped_early", "input_shape", "n_parameters"}``.
    """
    import torch

    from medvlm.cnn.data import EpochSampler, derive_seed, make_dataset
    from medvlm.cnn.images import ImageCohort, recalibrate_batch_norm
    from medvlm.cnn.models import build_model, count_parameters
    from medvlm.tasks import work_task

    task = work_task(work)
    k = task.n_classes
    cohorts = fold_cohorts(work, fold)
    if "test" not in cohorts:
        reporter.line(f"[yellow]warning:[/] {work}: the test cohort is empty; test predictions and "
                      "metrics are left out")
    input_shape = input_shape_of(work, cohorts)
    if len(set(cohorts["train"].labels)) < 2:
        reporter.line(f"[yellow]warning:[/] fold {fold}: the training cohort has one class only")
    elif k > 2 and len(set(cohorts["train"].labels)) < k:
        absent = [task.classes[i] for i in range(k) if i not in set(cohorts["train"].labels)]
        reporter.line(f"[yellow]warning:[/] fold {fold}: the training cohort has no "
                      f"{', '.join(absent)} (of {k} classes)")

    rank, world_size, _ = active_env()
    torch.manual_seed(derive_seed(config.seed, fold))
    model = build_model(config.model, input_shape, n_outputs(k)).to(device)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    dtype = autocast_dtype(device, config)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    fold_dir = run / f"fold{fold}"
    last_path, best_path = fold_dir / "last.pt", fold_dir / "best.pt"
    history: list[dict[str, Any]] = []
    best_epoch: int | None = None
    epoch = 0
    if last_path.is_file():
        ckpt = load_checkpoint(last_path)
        _check_resume(last_path, ckpt, config, input_shape)
        history, best_epoch, epoch = restore_training(ckpt, model=model, optimizer=optimizer,
                                                      scheduler=scheduler, scaler=scaler, path=last_path)
        reporter.line(f"fold {fold}: resuming after epoch {epoch} from {last_path}")
    # the network that trains: `model`, or its DDP wrapper; checkpoints, validation and scoring use `model`
    net = wrap_model(model, device, world_size)

    train_ds = make_dataset(work, cohorts["train"], augment=config.augment,
                            seed=derive_seed(config.seed, fold))
    sampler = EpochSampler(cohorts["train"].labels, oversample=config.oversample,
                           seed=derive_seed(config.seed, fold, 1), rank=rank, world_size=world_size)
    n_train = len(sampler)  # this rank's items per epoch (all of them in a single process)
    train_loader = make_loader(train_ds, config, device, sampler=sampler,
                               drop_last=n_train > 1 and n_train % config.batch_size == 1, seed=config.seed)
    bn_loader = None  # an image task: BatchNorm statistics re-estimated after each epoch (cnn.images)
    if isinstance(cohorts["train"], ImageCohort):
        bn_loader = make_loader(make_dataset(work, cohorts["train"]), config, device, seed=config.seed)
    val_ds = make_dataset(work, cohorts["val"])
    val_loader = make_loader(val_ds, config, device, seed=config.seed)
    val_labels = np.asarray(cohorts["val"].labels)

    def stop_early() -> bool:
        return (config.early_stopping is not None and best_epoch is not None
                and epoch - best_epoch >= config.early_stopping)

    if epoch > config.epochs:
        reporter.line(f"fold {fold}: already trained for {epoch} epochs (> --epochs {config.epochs}); "
                      "scoring the existing checkpoints")
    while epoch < config.epochs and not stop_early():
        started = time.perf_counter()
        sampler.set_epoch(epoch)  # the epoch travels with each ItemKey, also to persistent workers
        with reporter.bar(f"fold {fold} epoch {epoch + 1}/{config.epochs}",
                          len(train_loader) + len(val_loader)) as advance:
            train_loss, train_acc = train_one_epoch(net, train_loader, optimizer, device, dtype=dtype,
                                                    scaler=scaler, progress=advance, n_classes=k)
            if bn_loader is not None:
                recalibrate_batch_norm(model, bn_loader, device, dtype=dtype)
            if rank == 0:  # data-parallel: rank 0 validates, the others receive its result
                val_probs, val_loss = predict(model, val_loader, device, dtype=dtype, progress=advance,
                                              n_classes=k)
            else:
                val_probs, val_loss = None, None
            val_probs, val_loss = _broadcast((val_probs, val_loss))
        if not (math.isfinite(train_loss) and np.isfinite(val_probs).all()):
            raise DataError(f"fold {fold} epoch {epoch + 1}: training diverged (train loss {train_loss}, "
                            f"non-finite outputs); epochs 1..{epoch} are kept in {last_path}: lower --lr "
                            f"(now {config.lr:g}) in another --out, or check the volumes")
        m = epoch_metrics(val_labels, val_probs)  # K > 2: val_auc = macro one-vs-rest AUC, f1 = macro F1
        lr = float(optimizer.param_groups[0]["lr"])
        if scheduler is not None:
            scheduler.step(val_loss)
        epoch += 1
        row = {"fold": fold, "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
               "train_accuracy": train_acc, "val_accuracy": m["accuracy"], "val_auc": m["auc"],
               "val_balanced_accuracy": m["balanced_accuracy"], "val_f1": m["f1"], "val_mcc": m["mcc"],
               "lr": lr, "seconds": round(time.perf_counter() - started, 3)}
        history.append(row)
        metric = config.select_metric
        improved = best_epoch is None or (
            _select_value(row, metric) > _select_value(history[best_epoch - 1], metric)
        )
        if improved:
            best_epoch = epoch
        if improved and rank == 0:
            save_checkpoint(best_path, {"format": CHECKPOINT_FORMAT, "fold": fold, "epoch": epoch,
                                        "metric": config.select_metric, "value": row[config.select_metric],
                                        "input_shape": list(input_shape), "model": model.state_dict()})
        if rank == 0:
            save_checkpoint(last_path, {
                "format": CHECKPOINT_FORMAT, "fold": fold, "epoch": epoch, "input_shape": list(input_shape),
                "config": config.model_dump(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "history": history, "best_epoch": best_epoch, "rng": get_rng_state(),
            })
        if on_epoch is not None and rank == 0:
            on_epoch(history)
        reporter.line(
            f"fold {fold} epoch {epoch:>3}/{config.epochs}  train loss {train_loss:.4f} acc {train_acc:.3f}  "
            f"val loss {val_loss:.4f} acc {_fmt(m['accuracy'])} auc {_fmt(m['auc'])}  lr {lr:.2g}  "
            f"{row['seconds']:.1f}s{'  *best' if improved else ''}"
        )
    stopped_early = stop_early() and epoch < config.epochs
    if stopped_early:
        reporter.line(f"fold {fold}: stopped early after epoch {epoch} (no {config.select_metric} "
                      f"improvement for {config.early_stopping} epochs; best epoch {best_epoch})")
    if not history:
        raise DataError(f"{last_path}: no finished epoch to score")
    best_value = history[best_epoch - 1][config.select_metric] if best_epoch else None
    if rank != 0:  # data-parallel: rank 0 scores and writes; the others wait for it
        _barrier()
        return {"history": history, "predictions": None, "best_epoch": best_epoch, "best_value": best_value,
                "epochs_trained": epoch, "stopped_early": stopped_early, "checkpoint": None,
                "input_shape": list(input_shape), "n_parameters": count_parameters(model)}

    chosen = best_path if config.checkpoint == "best" and best_path.is_file() else last_path
    chosen_ckpt = load_checkpoint(chosen)
    if chosen == best_path and chosen_ckpt.get("epoch") != best_epoch:
        # only after a crash between writing best.pt and last.pt; the rerun epoch rewrote it on CPU
        reporter.line(f"[yellow]warning:[/] {best_path} holds epoch {chosen_ckpt.get('epoch')}, the history "
                      f"says best epoch {best_epoch}; scoring {best_path} as it is")
    load_weights(model, chosen_ckpt, chosen, "best" if chosen == best_path else "last")
    frame = score_cohorts(work, model, cohorts, config, device, fold=fold, dtype=dtype, reporter=reporter,
                          task=task)
    write_text_atomic(fold_dir / "predictions.csv", frame.to_csv(index=False))
    _barrier()
    return {"history": history, "predictions": frame, "best_epoch": best_epoch, "best_value": best_value,
            "epochs_trained": epoch, "stopped_early": stopped_early, "checkpoint": chosen.name,
            "input_shape": list(input_shape), "n_parameters": count_parameters(model)}


# --------------------------------------------------------------------------------------- the whole run
def train_cnn(work: str | Path, out: str | Path, config: CNNConfig) -> dict[str, Any]:
    """Train the CNN on one fold or all folds of ``WORK/splits.json``, resuming from ``out`` if present.

    Writes ``history.csv``, ``predictions.csv``, ``metrics.json``, ``run.json``, checkpoints and the
    learning curve under ``out`` (see the module docstring) and returns the metrics dict.

    Data-parallel training: started by ``torchrun --nproc-per-node N -m medvlm train-cnn WORK --out RUN``
    (env ``WORLD_SIZE`` > 1), each process joins a process group (``gloo`` on CPU, ``nccl`` on CUDA with
    device ``cuda:LOCAL_RANK``) and trains a DistributedDataParallel copy of the model on its share of
    each epoch's items (:class:`~medvlm.cnn.data.EpochSampler` with ``rank``/``world_size``, padded to
    equal length by wrap-around), so ``batch_size`` is per process and the effective batch is N times
    larger. The history's ``train_loss``/``train_accuracy`` are all-reduced over the ranks. Rank 0 alone
    validates (and broadcasts the result, so best epoch, scheduler and early stopping agree), scores the
    cohorts, writes every file (checkpoints, history, predictions, metrics, ``run.json``, figure) and
    prints; the other ranks wait at a barrier and return rank 0's metrics. Resuming works as in one
    process: every rank loads ``last.pt``. The process group is destroyed at the end.
    """
    rank, world_size, local_rank = distributed_env()
    if world_size == 1:
        return _train_cnn(work, out, config)
    with process_group(resolve_device(config.device), local_rank):
        return _train_cnn(work, out, config)


def _train_cnn(work: str | Path, out: str | Path, config: CNNConfig) -> dict[str, Any]:
    """:func:`train_cnn` in one process, or in one rank of an initialised process group."""
    from medvlm.runinfo import write_run_info
    from medvlm.tasks import work_task

    work, run = Path(work), Path(out)
    if not work.is_dir():
        raise DataError(f"{work}: work folder not found (run `medvlm prepare` first)")
    task = work_task(work)
    config = config.model_copy(update={"model": config.model or task.cnn_model})
    check_choices(config)
    folds = resolve_folds(work, config.fold)
    outputs = n_outputs(task.n_classes)
    device = resolve_device(config.device)
    rank, world_size, local_rank = active_env()
    if world_size > 1 and device.type == "cuda":
        import torch

        device = torch.device("cuda", local_rank)
    reporter = _Reporter(config.progress, silent=rank != 0)
    preflight(work, run, folds, config, outputs)
    extra: dict[str, Any] = {"world_size": world_size} if world_size > 1 else {}
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        write_run_info(run, kind="cnn", config=run_config(
            config, work, folds, task, device_resolved=str(device),
            workers_resolved=resolve_workers(config.workers, device), **extra))
    _barrier()
    reporter.line(f"train-cnn: model {config.model}, folds {folds}, device {device}, "
                  f"DataLoader workers {resolve_workers(config.workers, device)}, run {run}"
                  + (f", data-parallel over {world_size} processes" if world_size > 1 else ""))

    histories: dict[int, list[dict[str, Any]]] = {}
    results: dict[int, dict[str, Any]] = {}
    for fold in folds:
        def on_epoch(history: list[dict[str, Any]], fold: int = fold) -> None:
            histories[fold] = history
            write_history(run, histories)

        results[fold] = train_fold(work, run, fold, config, device=device, reporter=reporter,
                                   on_epoch=on_epoch)
        histories[fold] = results[fold]["history"]
    if rank != 0:  # data-parallel: rank 0 writes the run's files and sends its metrics
        return _broadcast(None)
    history = write_history(run, histories)

    notes: list[str] = []
    per_fold = fold_metrics(results, config, notes, task=task)
    predictions, test_source = combine_predictions(results, folds, positive=str(task.positive), task=task)
    write_text_atomic(run / "predictions.csv", predictions.to_csv(index=False))
    metrics = run_metrics(results, folds, per_fold, predictions, test_source, config, notes, task=task)
    for note in notes:
        reporter.line(f"note: {note}")
    write_json_atomic(run / "metrics.json", metrics)
    learning_curve(run, history, reporter)
    summary = metrics["test"] or {}
    reporter.line(f"train-cnn: done; test ({test_source}): accuracy {_fmt(summary.get('accuracy'))} "
                  f"auc {_fmt(summary.get('auc'))}; files in {run}")
    return _broadcast(metrics)
