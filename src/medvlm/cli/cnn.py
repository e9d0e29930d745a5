"""``medvlm train-cnn``: the study's 3D CNN (or a MONAI network) on the prepared volumes."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from medvlm.cli._app import FOLD_HELP, app, out_folder, parse_fold
from medvlm.errors import ConfigError


@app.command("train-cnn")
def train_cnn_command(
    work: Path = typer.Argument(..., help="Work folder written by `medvlm prepare` and `medvlm split`."),
    out: Path = typer.Option(..., "--out", callback=out_folder,
        help="Run folder; rerunning with the same folder resumes."),
    model: str | None = typer.Option(None, "--model", help="small3d (the study's CNN), densenet121, resnet18 "
                                     "(3D); densenet2d, resnet2d (2D). Default: the task's (small3d for "
                                     "brats-grading)."),
    epochs: int = typer.Option(20, "--epochs", help="Total epochs per fold (more extends a finished run)."),
    lr: float = typer.Option(1e-4, "--lr", help="Adam learning rate."),
    batch_size: int = typer.Option(4, "--batch-size", help="Volumes per batch."),
    fold: str = typer.Option("0", "--fold", help=FOLD_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, sampling and augmentation."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA + mixed precision if any), cpu, cuda."),
    workers: str = typer.Option("auto", "--workers",
                                help="DataLoader worker processes (0: in the main process); auto: 0 on CPU, "
                                     "2 on CUDA."),
    augment: bool = typer.Option(False, "--augment/--no-augment",
                                 help="MONAI flip, affine, intensity, noise."),
    oversample: bool = typer.Option(True, "--oversample/--no-oversample",
                                    help="Draw both classes equally often in training."),
    early_stopping: int = typer.Option(0, "--early-stopping",
                                       help="Stop a fold after N epochs without improvement (0: off)."),
    select_metric: str = typer.Option("val_auc", "--select-metric",
                                      help="val_auc, val_loss, val_balanced_accuracy, val_accuracy, val_f1, "
                                           "val_mcc: picks the best checkpoint."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="Score the 'best' or the 'last' checkpoint."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="Adam weight decay."),
    scheduler: str = typer.Option("none", "--scheduler",
                                  help="none or plateau (halve lr on a val-loss plateau)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for metric CIs (0: none)."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="Mixed precision on CUDA."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Train the CNN baseline; writes history.csv, predictions.csv, metrics.json and checkpoints in RUN."""
    from medvlm.cnn.config import make_config
    from medvlm.cnn.train import train_cnn
    from medvlm.registry import check_choice

    fold_value = parse_fold(fold)
    if workers != "auto" and not workers.isdigit():
        raise ConfigError(f"--workers must be a number of processes (0 or more) or 'auto', got {workers!r}")
    workers_value: int | str = workers if workers == "auto" else int(workers)
    check_choice("device", device, ["auto", "cpu", "cuda"])
    check_choice("checkpoint", checkpoint, ["best", "last"])
    check_choice("scheduler", scheduler, ["none", "plateau"])
    config = make_config(model=model, epochs=epochs, lr=lr, batch_size=batch_size, fold=fold_value, seed=seed,
                         device=device, workers=workers_value, augment=augment, oversample=oversample,
                         early_stopping=early_stopping or None, select_metric=select_metric,
                         checkpoint=checkpoint, weight_decay=weight_decay, scheduler=scheduler,
                         bootstrap=bootstrap, amp=amp, progress=progress)
    metrics = train_cnn(work, out, config)
    if os.environ.get("RANK", "0") not in ("", "0"):  # torchrun: rank 0 alone reports
        return
    test = metrics.get("test") or {}
    typer.echo(f"{out}: test accuracy {_rounded(test.get('accuracy'))}, auc {_rounded(test.get('auc'))} "
               f"({metrics['test_predictions']})")


def _rounded(value: object) -> str:
    """A metric for the summary line: 3 decimals, ``n/a`` when undefined.

    >>> _rounded(0.8333333), _rounded(None), _rounded(1)
    ('0.833', 'n/a', '1.000')
    """
    return "n/a" if value is None else f"{float(value):.3f}"
