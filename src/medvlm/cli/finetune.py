"""``medvlm finetune``: LoRA / QLoRA on the split's training cohort (docs/cli.md, Models)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from medvlm.cli._app import FOLD_HELP, app, out_folder, parse_fold


@app.command("finetune")
def finetune_cmd(
    work: Path = typer.Argument(..., help="Work folder (manifest.csv, splits.json) from prepare + split."),
    out: Path = typer.Option(..., "--out", callback=out_folder,
        help="ADAPTER folder: adapter, processor, train_log.csv, ..."),
    base_model: str = typer.Option(..., "--base-model", help="Base model folder (or hub id) to fine-tune."),
    method: str = typer.Option("lora", "--method", help="lora (full-precision base) or qlora (nf4 4-bit)."),
    engine: str = typer.Option("peft", "--engine",
                               help="peft (plain loop, default), trl (SFTTrainer) or unsloth (CUDA only)."),
    target: str = typer.Option("language", "--target",
                               help="LoRA on attention projections of: language, vision or all."),
    rank: int = typer.Option(16, "--rank", help="LoRA rank r."),
    alpha: float = typer.Option(32.0, "--alpha", help="LoRA alpha (scale alpha/r)."),
    dropout: float = typer.Option(0.05, "--dropout", help="LoRA dropout."),
    epochs: int = typer.Option(1, "--epochs", help="Passes over the (balanced) training slices."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimiser steps; overrides --epochs."),
    lr: float = typer.Option(2e-4, "--lr", help="Learning rate (AdamW, constant)."),
    batch_size: int = typer.Option(4, "--batch-size", help="Slices per forward pass."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Forward passes per optimiser step."),
    seed: int = typer.Option(0, "--seed", help="Seed of the LoRA init, data order and dropout."),
    fold: str = typer.Option("0", "--fold", help=FOLD_HELP),
    orientations: str | None = typer.Option(None, "--orientations", help="Comma list (default: the task's, "
                                            "axial,coronal,sagittal for brats-grading)."),
    prompt: str | None = typer.Option(None, "--prompt", help="Prompt name or file (as for eval-vlm; default: "
                                      "the task's)."),
    slices: str | None = typer.Option(None, "--slices", help="Slice selection (as for eval-vlm; default: the "
                                      "task's)."),
    modalities: str | None = typer.Option(None, "--modalities", help="Comma list (as for eval-vlm; default: "
                                          "the task's)."),
    max_slices_per_patient: int | None = typer.Option(
        None, "--max-slices-per-patient", help="At most N slices per patient and orientation (and class, "
        "for a slice-level task; even spread)."),
    max_val_slices_per_patient: int | None = typer.Option(
        None, "--max-val-slices-per-patient", help="Same for validation (default: the above)."),
    balance: bool = typer.Option(True, "--balance/--no-balance", help="Oversample the minority class."),
    validate: bool = typer.Option(True, "--val/--no-val", help="Score the validation cohort each epoch."),
    select: str = typer.Option("best", "--select", help="Adapter kept: best (by validation) or last epoch."),
    select_metric: str = typer.Option("val_p_true", "--select-metric",
                                      help="val_p_true or val_balanced_accuracy."),
    save_steps: int = typer.Option(50, "--save-steps", help="Checkpoint every N steps (and each epoch)."),
    merge: bool = typer.Option(False, "--merge", help="Also write ADAPTER/merged (full model, for vLLM)."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Save memory."),
) -> None:
    """Fine-tune a VLM with LoRA/QLoRA on the training cohort; the adapter goes to eval-vlm --adapter."""
    from pydantic import ValidationError

    from medvlm.errors import ConfigError
    from medvlm.finetune import FinetuneConfig, finetune

    fold_value = parse_fold(fold)
    if fold_value == "all":
        raise ConfigError("--fold all: finetune trains one adapter on one fold; for every fold: "
                          f"medvlm sweep {work} --what finetune --folds all")
    options = dict(
        base_model=base_model, method=method, engine=engine, target=target, rank=rank, alpha=alpha,
        dropout=dropout, epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,
        grad_accum=grad_accum, seed=seed, fold=fold_value,
        orientations=[o.strip() for o in orientations.split(",") if o.strip()] if orientations else None,
        prompt=prompt, slices=slices,
        modalities=[m.strip() for m in modalities.split(",") if m.strip()] if modalities else None,
        max_slices_per_patient=max_slices_per_patient, max_val_slices_per_patient=max_val_slices_per_patient,
        balance=balance, validate_each_epoch=validate, select=select, select_metric=select_metric,
        save_steps=save_steps, merge=merge, gradient_checkpointing=gradient_checkpointing)
    try:
        config = FinetuneConfig(**options)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        raise ConfigError(f"--{name.replace('_', '-')}: {err['msg']} (got {err.get('input')!r})") from None
    summary = finetune(work, out, config)
    val = summary["val"]
    val_text = ", ".join(f"{k} {v:.3f}" for k, v in val.items() if v is not None) or "no validation"
    counts = ", ".join(f"{k} {v}" for k, v in summary["balance"].items() if not k.endswith("_balanced"))
    print(f"{summary['steps']} steps on {summary['n_train']} slices ({counts} before balancing); "
          f"epoch {summary['selected_epoch']} kept ({val_text}) -> {out}")
    for problem in summary["problems"]:
        print(f"  skipped {problem}", file=sys.stderr)
    if summary["merged"]:
        print(f"merged model -> {summary['merged']}")
