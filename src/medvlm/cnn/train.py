"""Training and scoring of the CNN baseline (``medvlm train-cnn``), as library functions.

Entry point: :func:`train_cnn` ``(work, out, config) -> metrics dict``. Labels: LGG = 0, HGG = 1; the
network outputs one logit per volume and ``sigmoid(logit)`` = P(HGG); ``pred = P(HGG) >= 0.5``.

What a run folder ``RUN`` holds:

- ``fold<k>/last.pt``: everything needed to resume after the last finished epoch (model, optimiser,
  scheduler, AMP scaler, torch/CUDA/numpy/python RNG states, history, best epoch and value), written
  atomically after every epoch; ``fold<k>/best.pt``: the weights of the best epoch by
  ``select_metric``; ``fold<k>/predictions.csv``: that fold's chosen checkpoint on train, val, test.
  Checkpoints are plain tensors and types, loaded with ``torch.load(weights_only=True)``.
- ``history.csv``: one row per fold and epoch (:data:`HISTORY_COLUMNS`); ``train_*`` are running
  values over the epoch's (oversampled, augmented) training stream, ``val_*`` from a full pass over
  the validation cohort after the epoch.
- ``predictions.csv``: ``patient_id,cohort,label,pred,score,fold``. With one fold: the chosen
  checkpoint on that fold's train, val and test cohorts (``fold`` = k). With ``fold="all"``: one row per
  patient: every non-test patient once, as its *out-of-fold* prediction (cohort ``val``, ``fold`` = the
  fold whose model did not train on it), and every test patient once, scored by the *ensemble* of the
  fold models (mean P(HGG); ``fold`` = ``ensemble``). So ``medvlm compare`` and the report, which join
  on ``patient_id`` in the test cohort, see one test prediction per patient. Each fold's own
  train/val/test predictions stay in ``fold<k>/predictions.csv``.
- ``metrics.json``: ``{"model", "folds": {"k": {"train", "val", "test"}}, "cv", "test", ...}`` where
  each cohort leaf is :func:`medvlm.metrics.binary_metrics` plus the ``_ci`` keys of
  :func:`medvlm.metrics.bootstrap_metrics`; ``cv`` = mean and sample standard deviation (ddof 1;
  null for one fold) over folds of the val and test metrics; ``test`` = metrics of the test rows of
  ``predictions.csv`` (the fold's model, or the ensemble); ``oof_val`` (fold all) = metrics of the
  out-of-fold predictions; ``training`` = per-fold best epoch, epochs trained, early stop; ``notes`` =
  the metric warnings (undefined metrics, bootstrap resamples left out), one line each.
- ``run.json`` (kind ``cnn``), ``learning_curve.png`` when the report's figure function is present.

Resuming: rerunning with the same ``RUN`` continues each fold after its last finished epoch; a larger
``epochs`` extends a finished run; options that change training (model, lr, batch size, seed, ...)
must match the checkpoint. Randomness is a function of (seed, fold, epoch, item) plus the restored
global RNG states, so on CPU a resumed run reproduces an uninterrupted one exactly.

Data-parallel training: under ``torchrun --nproc-per-node N`` (env ``WORLD_SIZE`` > 1) the run is
DistributedDataParallel; see :func:`train_cnn` and :func:`distributed_env`.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medvlm._io import atomic_path, write_json_atomic, write_text_atomic
from medvlm.errors import ConfigError, DataError
from medvlm.registry import check_choice

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch
    from rich.console import Console
    from torch import nn

#: Validation metrics a run can select its best checkpoint by (``val_loss`` lower is better).
SELECT_METRICS = ("val_auc", "val_loss", "val_balanced_accuracy", "val_accuracy", "val_f1", "val_mcc")
#: Columns of ``history.csv``.
HISTORY_COLUMNS = ("fold", "epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy", "val_auc",
                   "val_balanced_accuracy", "val_f1", "val_mcc", "lr", "seconds")
#: Options that must be the same when a run resumes from its checkpoint.
RESUME_KEYS = ("model", "lr", "batch_size", "seed", "augment", "oversample", "weight_decay", "scheduler",
               "select_metric")
CHECKPOINT_FORMAT = 1


class CNNConfig(BaseModel):
    """Options of ``train-cnn`` (defaults: the study's setting where it states one)."""

    model_config = ConfigDict(extra="forbid")

    model: str = "small3d"
    epochs: int = Field(20, ge=1)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(4, ge=1)
    fold: int | Literal["all"] = 0
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="DataLoader worker processes; auto: 0 on CPU, 2 on CUDA (see resolve_workers)")
    augment: bool = False
    oversample: bool = True
    early_stopping: int | None = Field(None, ge=1, description="patience in epochs; None: off")
    select_metric: str = "val_auc"
    checkpoint: Literal["best", "last"] = "best"
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["none", "plateau"] = "none"
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for metric CIs; 0: none")
    amp: bool = True
    progress: bool = True


def make_config(**options: Any) -> CNNConfig:
    """:class:`CNNConfig` from keyword options; an invalid value raises a one-line ConfigError."""
    try:
        config = CNNConfig(**options)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise ConfigError(f"train-cnn option {where!r}: {err['msg']} (got {err.get('input')!r})") from None
    check_choice("select_metric", config.select_metric, SELECT_METRICS)
    from medvlm.cnn.models import MODELS

    check_choice("model", config.model, MODELS.names())
    return config


# ------------------------------------------------------------------------------------------- building
def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a ConfigError."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def distributed_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``); ``(0, 1, 0)`` in a plain process."""
    import os

    def read(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        if not value.strip().isdigit():
            return default
        return int(value)

    world = max(read("WORLD_SIZE", 1), 1)
    if world == 1:
        return 0, 1, 0
    return read("RANK", 0), world, read("LOCAL_RANK", 0)


def _dist_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _barrier() -> None:
    if _dist_active():
        import torch.distributed as dist

        dist.barrier()


def _broadcast(value: Any) -> Any:
    """``value`` of rank 0 on every rank (pickled through ``broadcast_object_list``); as is when alone."""
    if not _dist_active():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def make_optimizer(model: nn.Module, config: CNNConfig) -> torch.optim.Optimizer:
    """Adam, as in the study (``weight_decay`` 0 by default)."""
    import torch

    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: CNNConfig) -> Any:
    """None (constant lr, the study) or ReduceLROnPlateau on the validation loss (factor 0.5, patience 3)."""
    import torch

    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=3)
    return None


def autocast_dtype(device: torch.device, config: CNNConfig) -> torch.dtype | None:
    """Mixed precision on CUDA (bfloat16 where supported, else float16); None on CPU or with amp off."""
    import torch

    if device.type != "cuda" or not config.amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


#: Worker processes ``--workers auto`` uses on CUDA.
CUDA_WORKERS = 2
#: Batches each worker loads ahead (PyTorch's default; 2 x workers batches in flight).
PREFETCH_FACTOR = 2


def resolve_workers(workers: int | str, device: torch.device) -> int:
    """DataLoader worker processes: ``auto`` -> 0 on CPU, :data:`CUDA_WORKERS` on CUDA; an int as is.

    On CPU the volumes are memory-mapped ``.npy`` files, so loading one is a memory copy and worker
    processes only compete with torch's compute threads for the cores; on CUDA they overlap loading
    (and augmentation) with the GPU's work.
    """
    if workers == "auto":
        return CUDA_WORKERS if device.type == "cuda" else 0
    return int(workers)


def make_loader(dataset: Any, config: CNNConfig, device: torch.device, *, sampler: Any = None,
                drop_last: bool = False, seed: int = 0, persistent: bool = True
                ) -> torch.utils.data.DataLoader:
    """A DataLoader with :func:`resolve_workers` workers; ``sampler`` None -> the dataset's order.

    With workers, ``persistent`` (the default, for loaders iterated every epoch) keeps the worker
    processes alive between epochs instead of forking new ones for each pass; pass False for a loader
    iterated once. Persistent workers hold copies of the dataset made when they started, so anything
    that changes per epoch must come through the sampler (:class:`~medvlm.cnn.data.ItemKey`).
    """
    import torch

    workers = resolve_workers(config.workers, device)
    extra: dict[str, Any] = {}
    if workers:
        extra = {"persistent_workers": persistent, "prefetch_factor": PREFETCH_FACTOR}
    return torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, sampler=sampler, shuffle=False, drop_last=drop_last,
        num_workers=workers, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed), **extra,
    )


# ------------------------------------------------------------------------------------------ RNG state
def get_rng_state() -> dict[str, Any]:
    """Global torch/CUDA/numpy/python RNG states as tensors and plain types (``weights_only`` safe)."""
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "state": [int(v) for v in internal], "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    import torch

    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))


# ----------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file and an atomic rename (a crash never leaves half a file)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on CPU; a damaged file is a DataError naming it."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise DataError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc}); "
                        "delete it to restart this fold") from exc


def _check_resume(path: Path, ckpt: dict[str, Any], config: CNNConfig, input_shape: tuple[int, ...]) -> None:
    saved = ckpt.get("config", {})
    for key in RESUME_KEYS:
        if key in saved and saved[key] != getattr(config, key):
            option = "--" + key.replace("_", "-")
            raise ConfigError(f"{path}: this run was trained with {option} {saved[key]!r}, not "
                              f"{getattr(config, key)!r}; rerun with the same options or use another --out")
    if tuple(ckpt.get("input_shape", input_shape)) != tuple(input_shape):
        raise ConfigError(f"{path}: trained on volumes of shape {tuple(ckpt['input_shape'])}, the work "
                          f"folder now has {tuple(input_shape)}; use another --out")


# ------------------------------------------------------------------------------------------ one epoch
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


def train_one_epoch(model: nn.Module, loader: Any, optimizer: Any, device: torch.device, *,
                    dtype: torch.dtype | None, scaler: Any, progress: Callable[[], None] | None = None
                    ) -> tuple[float, float]:
    """One pass over ``loader`` with BCE-with-logits; returns (mean loss, accuracy) over the items seen."""
    import torch

    model.train()
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
    total, correct, seen = 0.0, 0, 0
    for x, y, _ in loader:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x).squeeze(1)
        loss = loss_fn(logits.float(), y)
        scaler.scale(loss / len(y)).backward()
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach())
        correct += int(((logits.detach() >= 0).float() == y).sum())
        seen += len(y)
        if progress is not None:
            progress()
    if _dist_active():  # data-parallel: the epoch's loss and accuracy over every rank's items
        import torch.distributed as dist

        sums = torch.tensor([total, float(correct), float(seen)], dtype=torch.float64, device=device)
        if device.type != "cuda" and dist.get_backend() == "nccl":  # pragma: no cover - nccl wants CUDA
            sums = sums.cuda()
        dist.all_reduce(sums)
        total, correct, seen = float(sums[0]), int(sums[1]), int(sums[2])
    return total / max(seen, 1), correct / max(seen, 1)


def predict(model: nn.Module, loader: Any, device: torch.device, *, dtype: torch.dtype | None = None,
            progress: Callable[[], None] | None = None) -> tuple[np.ndarray, float]:
    """P(HGG) of every item of ``loader`` in order, shape (n,), and the mean BCE loss."""
    import torch

    model.eval()
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
    probs, total, seen = [], 0.0, 0
    with torch.no_grad():
        for x, y, _ in loader:
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x).squeeze(1).float()
            total += float(loss_fn(logits, y))
            seen += len(y)
            probs.append(torch.sigmoid(logits).cpu().numpy())
            if progress is not None:
                progress()
    return (np.concatenate(probs).astype(np.float64) if probs else np.zeros(0)), total / max(seen, 1)


def _quiet_metrics(labels: Any, preds: Any, scores: Any) -> dict[str, Any]:
    from medvlm.metrics import binary_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return binary_metrics(labels, preds, scores)


# ------------------------------------------------------------------------------------------- one fold
class _Reporter:
    """A rich progress bar over batches plus one line per epoch (on stderr)."""

    def __init__(self, enabled: bool, *, silent: bool = False) -> None:
        from rich.console import Console

        self.console: Console = Console(stderr=True, soft_wrap=True)
        self.enabled = enabled and not silent
        self.silent = silent

    @contextlib.contextmanager
    def bar(self, description: str, total: int) -> Any:
        if not self.enabled:
            yield lambda: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)

    def line(self, text: str) -> None:
        if not self.silent:
            self.console.print(text, highlight=False)


def _fmt(value: Any) -> str:
    return "  n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def train_fold(work: Path, run: Path, fold: int, config: CNNConfig, *, device: torch.device,
               reporter: _Reporter, on_epoch: Callable[[list[dict[str, Any]]], None] | None = None
               ) -> dict[str, Any]:
    """Train (or resume) fold ``fold`` up to ``config.epochs``; score its chosen checkpoint.

    Returns ``{"history", "predictions" (DataFrame), "best_epoch", "best_value", "epochs_trained",
    "stopped_early", "input_shape", "n_parameters"}``.
    """
    import torch

    from medvlm.cnn.data import EpochSampler, VolumeDataset, check_volumes, derive_seed
    from medvlm.cnn.models import build_model, count_parameters

    cohorts = fold_cohorts(work, fold)
    if "test" not in cohorts:
        reporter.line(f"[yellow]warning:[/] {work}: the test cohort is empty; test predictions and "
                      "metrics are left out")
    input_shape = check_volumes(work, [pid for c in cohorts.values() for pid in c.patient_ids])
    if len(set(cohorts["train"].labels)) < 2:
        reporter.line(f"[yellow]warning:[/] fold {fold}: the training cohort has one class only")

    rank, world_size, _ = distributed_env() if _dist_active() else (0, 1, 0)
    torch.manual_seed(derive_seed(config.seed, fold))
    model = build_model(config.model, input_shape).to(device)
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
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        history, best_epoch, epoch = list(ckpt["history"]), ckpt["best_epoch"], int(ckpt["epoch"])
        set_rng_state(ckpt["rng"])
        reporter.line(f"fold {fold}: resuming after epoch {epoch} from {last_path}")
    # the network that trains: `model` itself, or its DistributedDataParallel wrapper (same parameters);
    # checkpoints, validation and scoring use `model`, so their format does not depend on the world size
    net: nn.Module = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    train_ds = VolumeDataset(work, cohorts["train"], augment=config.augment,
                             seed=derive_seed(config.seed, fold))
    sampler = EpochSampler(cohorts["train"].labels, oversample=config.oversample,
                           seed=derive_seed(config.seed, fold, 1), rank=rank, world_size=world_size)
    n_train = len(sampler)  # this rank's items per epoch (all of them in a single process)
    train_loader = make_loader(train_ds, config, device, sampler=sampler,
                               drop_last=n_train > 1 and n_train % config.batch_size == 1, seed=config.seed)
    val_ds = VolumeDataset(work, cohorts["val"])
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
                                                    scaler=scaler, progress=advance)
            if rank == 0:  # data-parallel: rank 0 validates, the others receive its result
                val_probs, val_loss = predict(model, val_loader, device, dtype=dtype, progress=advance)
            else:
                val_probs, val_loss = None, None
            val_probs, val_loss = _broadcast((val_probs, val_loss))
        m = _quiet_metrics(val_labels, (val_probs >= 0.5).astype(int), val_probs)
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
    model.load_state_dict(chosen_ckpt["model"])
    frame = score_cohorts(work, model, cohorts, config, device, fold=fold, dtype=dtype, reporter=reporter)
    write_text_atomic(fold_dir / "predictions.csv", frame.to_csv(index=False))
    _barrier()
    return {"history": history, "predictions": frame, "best_epoch": best_epoch, "best_value": best_value,
            "epochs_trained": epoch, "stopped_early": stopped_early, "checkpoint": chosen.name,
            "input_shape": list(input_shape), "n_parameters": count_parameters(model)}


def score_cohorts(work: Path, model: nn.Module, cohorts: dict[str, Any], config: CNNConfig,
                  device: torch.device, *, fold: int, dtype: Any = None, reporter: _Reporter | None = None
                  ) -> pd.DataFrame:
    """``patient_id,cohort,label,pred,score,fold`` rows of ``model`` on each cohort (no augmentation)."""
    import pandas as pd

    from medvlm.cnn.data import VolumeDataset

    reporter = reporter or _Reporter(False)
    frames = []
    for name, cohort in cohorts.items():
        loader = make_loader(VolumeDataset(work, cohort), config, device, seed=config.seed, persistent=False)
        with reporter.bar(f"fold {fold} scoring {name}", len(loader)) as advance:
            probs, _ = predict(model, loader, device, dtype=dtype, progress=advance)
        frames.append(pd.DataFrame({"patient_id": cohort.patient_ids, "cohort": name,
                                    "label": cohort.labels, "pred": (probs >= 0.5).astype(int),
                                    "score": np.round(probs, 6), "fold": str(fold)}))
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------- the whole run
def cohort_metrics(frame: pd.DataFrame, *, n_boot: int, seed: int, notes: list[str] | None = None,
                   where: str = "") -> dict[str, Any]:
    """``binary_metrics`` plus bootstrap ``_ci`` keys of a predictions frame (labels, preds, scores).

    Warnings about undefined metrics are appended to ``notes`` as ``"<where>: <message>"`` lines.
    """
    from medvlm.metrics import binary_metrics, bootstrap_metrics

    labels, preds, scores = frame["label"].to_numpy(), frame["pred"].to_numpy(), frame["score"].to_numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = binary_metrics(labels, preds, scores)
        if n_boot:
            out.update(bootstrap_metrics(labels, preds, scores, n_boot=n_boot, seed=seed))
    if notes is not None:
        notes.extend(f"{where}: {w.message}" for w in caught)
    return out


def cv_summary(per_fold: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1; None for one fold) over folds, per cohort and metric.

    >>> s = cv_summary({"0": {"val": {"auc": 0.5}}, "1": {"val": {"auc": 0.7}}})
    >>> s["n_folds"], s["val"]["auc"]["mean"], round(s["val"]["auc"]["std"], 4), s["val"]["auc"]["n"]
    (2, 0.6, 0.1414, 2)
    """
    from medvlm.metrics import CI_METRICS

    out: dict[str, Any] = {"n_folds": len(per_fold), "folds": [int(k) for k in per_fold]}
    for cohort in ("val", "test"):
        summary = {}
        for metric in CI_METRICS:
            values = [float(m[cohort][metric]) for m in per_fold.values()
                      if cohort in m and m[cohort].get(metric) is not None]
            if not values and not any(cohort in m for m in per_fold.values()):
                continue
            summary[metric] = {
                "mean": float(np.mean(values)) if values else None,
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "n": len(values),
            }
        if summary:
            out[cohort] = summary
    return out


def _write_history(run: Path, histories: dict[int, list[dict[str, Any]]]) -> pd.DataFrame:
    import pandas as pd

    rows = [row for fold in sorted(histories) for row in histories[fold]]
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    write_text_atomic(run / "history.csv", frame.to_csv(index=False))
    return frame


def _learning_curve(run: Path, history: pd.DataFrame, reporter: _Reporter) -> Path | None:
    """``RUN/learning_curve.png`` via ``medvlm.report.figures.learning_curve_figure`` when it exists.

    A missing or failing figure function never fails a finished training; it is reported on stderr.
    """
    path = run / "learning_curve.png"
    try:
        from medvlm.report.figures import learning_curve_figure

        figure = learning_curve_figure(history)
        if isinstance(figure, bytes | bytearray):
            with atomic_path(path) as tmp:
                tmp.write_bytes(figure)
        elif isinstance(figure, str | Path):
            return Path(figure)
        else:
            with atomic_path(path) as tmp:
                figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
            with contextlib.suppress(Exception):
                import matplotlib.pyplot as plt

                plt.close(figure)
    except Exception as exc:  # noqa: BLE001 - the figure is optional
        reporter.line(f"[yellow]warning:[/] no learning-curve figure ({type(exc).__name__}: {exc})")
        return None
    return path


def resolve_folds(work: str | Path, fold: int | str) -> list[int]:
    """Fold numbers to train: ``[k]`` or every fold of ``splits.json`` for ``"all"``."""
    from medvlm.data.cohorts import read_splits

    splits = read_splits(work)
    n = len(splits["folds"])
    if n == 0:
        raise DataError(f"{Path(work) / 'splits.json'}: the split has no fold; run `medvlm split --folds K`")
    if fold == "all":
        return list(range(n))
    if isinstance(fold, str):
        if not fold.isdigit():
            raise ConfigError(f"--fold must be a fold number or 'all', got {fold!r}")
        fold = int(fold)
    if not 0 <= fold < n:
        raise ConfigError(f"--fold {fold}: {Path(work) / 'splits.json'} has folds 0..{n - 1}")
    return [fold]


def fold_cohorts(work: Path, fold: int) -> dict[str, Any]:
    """The train, val and test :class:`~medvlm.data.cohorts.Cohort` of ``fold`` (test left out if empty).

    An empty train or val cohort, a fold out of range or a missing split raise :class:`DataError`.
    """
    from medvlm.data.cohorts import load_cohort

    cohorts = {"train": load_cohort(work, "train", fold=fold), "val": load_cohort(work, "val", fold=fold)}
    try:
        cohorts["test"] = load_cohort(work, "test", fold=fold)
    except DataError as exc:
        if "has no patient" not in str(exc):
            raise
    return cohorts


def preflight(work: Path, run: Path, folds: list[int], config: CNNConfig) -> None:
    """Fail before anything is written: cohorts, volumes, model vs input shape, options vs ``run.json``."""
    from medvlm.cnn.data import check_volumes
    from medvlm.cnn.models import check_input_shape
    from medvlm.runinfo import read_run_info

    ids: list[str] = []
    for fold in folds:
        ids += [pid for c in fold_cohorts(work, fold).values() for pid in c.patient_ids]
    check_input_shape(config.model, check_volumes(work, list(dict.fromkeys(ids))))
    info = read_run_info(run) if (run / "run.json").is_file() else None
    saved = (info or {}).get("config") or {}
    if info and info.get("kind") != "cnn":
        raise ConfigError(f"{run / 'run.json'}: this folder holds a {info.get('kind')!r} run, not a CNN run; "
                          "use another --out")
    for key in RESUME_KEYS:
        if key in saved and saved[key] != getattr(config, key):
            option = "--" + key.replace("_", "-")
            raise ConfigError(f"{run}: this run was trained with {option} {saved[key]!r}, not "
                              f"{getattr(config, key)!r}; rerun with the same options or use another --out")


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
    import datetime

    import torch
    import torch.distributed as dist

    device = resolve_device(config.device)
    started_here = not dist.is_initialized()
    if started_here:
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(hours=1))
    try:
        return _train_cnn(work, out, config)
    finally:
        if started_here and dist.is_initialized():
            dist.destroy_process_group()


def _train_cnn(work: str | Path, out: str | Path, config: CNNConfig) -> dict[str, Any]:
    """:func:`train_cnn` in one process, or in one rank of an initialised process group."""
    import pandas as pd

    from medvlm.runinfo import write_run_info

    work, run = Path(work), Path(out)
    if not work.is_dir():
        raise DataError(f"{work}: work folder not found (run `medvlm prepare` first)")
    check_choice("select_metric", config.select_metric, SELECT_METRICS)
    from medvlm.cnn.models import MODELS

    check_choice("model", config.model, MODELS.names())
    folds = resolve_folds(work, config.fold)
    device = resolve_device(config.device)
    rank, world_size, local_rank = distributed_env() if _dist_active() else (0, 1, 0)
    if world_size > 1 and device.type == "cuda":
        import torch

        device = torch.device("cuda", local_rank)
    reporter = _Reporter(config.progress, silent=rank != 0)
    preflight(work, run, folds, config)
    extra: dict[str, Any] = {"world_size": world_size} if world_size > 1 else {}
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        write_run_info(run, kind="cnn", config={**config.model_dump(), "work": str(work.resolve()),
                                                "folds": folds, "device_resolved": str(device),
                                                "workers_resolved": resolve_workers(config.workers, device),
                                                **extra})
    _barrier()
    reporter.line(f"train-cnn: model {config.model}, folds {folds}, device {device}, "
                  f"DataLoader workers {resolve_workers(config.workers, device)}, run {run}"
                  + (f", data-parallel over {world_size} processes" if world_size > 1 else ""))

    histories: dict[int, list[dict[str, Any]]] = {}
    results: dict[int, dict[str, Any]] = {}
    for fold in folds:
        def on_epoch(history: list[dict[str, Any]], fold: int = fold) -> None:
            histories[fold] = history
            _write_history(run, histories)

        results[fold] = train_fold(work, run, fold, config, device=device, reporter=reporter,
                                   on_epoch=on_epoch)
        histories[fold] = results[fold]["history"]
    if rank != 0:  # data-parallel: rank 0 writes the run's files and sends its metrics
        return _broadcast(None)
    history = _write_history(run, histories)

    per_fold: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for fold, res in results.items():
        frame = res["predictions"]
        per_fold[str(fold)] = {c: cohort_metrics(frame[frame["cohort"] == c], n_boot=config.bootstrap,
                                                 seed=config.seed, notes=notes, where=f"fold {fold} {c}")
                               for c in ("train", "val", "test") if (frame["cohort"] == c).any()}
    if len(folds) == 1:
        predictions = results[folds[0]]["predictions"]
        test_source = f"fold {folds[0]} model ({results[folds[0]]['checkpoint']})"
    else:
        oof = pd.concat([r["predictions"][r["predictions"]["cohort"] == "val"] for r in results.values()],
                        ignore_index=True)
        tests = [r["predictions"][r["predictions"]["cohort"] == "test"] for r in results.values()]
        parts = [oof]
        if all(len(t) for t in tests):
            probs = np.mean([t["score"].to_numpy() for t in tests], axis=0)
            first = tests[0]
            parts.append(pd.DataFrame({"patient_id": first["patient_id"].to_numpy(), "cohort": "test",
                                       "label": first["label"].to_numpy(), "pred": (probs >= 0.5).astype(int),
                                       "score": np.round(probs, 6), "fold": "ensemble"}))
        predictions = pd.concat(parts, ignore_index=True)
        test_source = f"ensemble: mean P(HGG) of the {len(folds)} fold models"
    predictions = predictions[["patient_id", "cohort", "label", "pred", "score", "fold"]]
    write_text_atomic(run / "predictions.csv", predictions.to_csv(index=False))

    test_rows = predictions[predictions["cohort"] == "test"]
    metrics: dict[str, Any] = {
        "model": config.model,
        "folds": per_fold,
        "cv": cv_summary(per_fold),
        "test": (None if not len(test_rows) else per_fold[str(folds[0])]["test"] if len(folds) == 1
                 else cohort_metrics(test_rows, n_boot=config.bootstrap, seed=config.seed, notes=notes,
                                     where="ensemble test")),
        "test_predictions": test_source,
        "selection": {"metric": config.select_metric, "checkpoint": config.checkpoint},
        "training": {str(f): {k: r[k] for k in ("best_epoch", "best_value", "epochs_trained", "stopped_early",
                                                "checkpoint")}
                     for f, r in results.items()},
        "input_shape": results[folds[0]]["input_shape"],
        "n_parameters": results[folds[0]]["n_parameters"],
    }
    if len(folds) > 1:
        oof_rows = predictions[predictions["cohort"] == "val"]
        metrics["oof_val"] = cohort_metrics(oof_rows, n_boot=config.bootstrap, seed=config.seed, notes=notes,
                                            where="out-of-fold val")
    metrics["notes"] = notes
    for note in notes:
        reporter.line(f"note: {note}")
    write_json_atomic(run / "metrics.json", metrics)
    _learning_curve(run, history, reporter)
    summary = metrics["test"] or {}
    reporter.line(f"train-cnn: done; test ({test_source}): accuracy {_fmt(summary.get('accuracy'))} "
                  f"auc {_fmt(summary.get('auc'))}; files in {run}")
    return _broadcast(metrics)
