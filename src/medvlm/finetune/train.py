"""``finetune(work, out, config)``: LoRA / QLoRA on the split's training cohort, resumable.

What lands in ``out`` (the ADAPTER folder):

- ``adapter_config.json`` + ``adapter_model.safetensors``: the PEFT adapter of the selected epoch
  (``PeftModel.from_pretrained(base, out)`` loads it; ``eval-vlm --adapter out`` uses it), the processor
  files, and ``finetune_config.json`` (base model, prompt name and sha, method, hyper-parameters,
  class balance, selected epoch);
- ``train_log.csv``: ``step,epoch,loss,lr,val_nll,val_p_true,val_accuracy,val_balanced_accuracy,``
  ``val_patient_balanced_accuracy``: one row per optimiser step (loss) and one per epoch end (val
  metrics; the row at step 0 is the base model);
- ``loss_curve.png``, ``run.json`` (kind ``finetune``), ``checkpoint/`` (the last training state) and,
  with ``merge``, ``merged/`` (the base model with the adapter merged in, loadable by from_pretrained).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from medvlm.errors import ConfigError, DataError
from medvlm.finetune._checkpoint import (
    latest_checkpoint,
    load_adapter_weights,
    load_checkpoint,
    read_state,
    save_adapter_weights,
    save_checkpoint,
)
from medvlm.finetune._steps import (
    BEST,
    _Context,
    _improved,
    load_model,
    make_batch,
    steps_per_epoch,
    validate,
)
from medvlm.finetune._trl import train_trl
from medvlm.finetune.config import RESUMABLE_FIELDS, FinetuneConfig
from medvlm.finetune.data import Example, balance_examples, cohort_examples, examples_fingerprint
from medvlm.tasks.base import slug

LOG_COLUMNS = ["step", "epoch", "loss", "lr", "val_nll", "val_p_true", "val_accuracy",
               "val_balanced_accuracy", "val_patient_balanced_accuracy"]


def finetune(work: str | Path, out: str | Path, config: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune ``config.base_model`` on ``work``'s training cohort; write the adapter into ``out``.

    Resumes from ``out/checkpoint`` when present (only ``epochs``, ``max_steps``, ``save_steps`` and
    ``merge`` may differ from the checkpoint's config). Returns a summary dict: ``out``, ``steps``,
    ``epochs``, ``selected_epoch``, ``val`` (metrics of the selected epoch), ``balance``, ``n_train``,
    ``n_val``, ``problems``, ``merged`` (path or None).
    Raises DataError (no split, missing base model, no training slice) and ConfigError (engine not
    usable here, checkpoint from another configuration).
    """
    from medvlm.data.cohorts import load_cohort
    from medvlm.data.slices import parse_modalities, parse_selection
    from medvlm.finetune._model import check_base_model, check_engine
    from medvlm.tasks import work_task
    from medvlm.vlm.prompts import load_prompt

    work, out = Path(work), Path(out)
    task = work_task(work)
    cfg = config.for_task(task)
    if task.unit != "image":  # an image task: whole images, no slices or modalities
        parse_selection(cfg.slices)
        parse_modalities(cfg.modalities)
    base_model = check_base_model(cfg.base_model)
    train_cohort = load_cohort(work, "train", fold=cfg.fold)
    val_cohort = load_cohort(work, "val", fold=cfg.fold) if cfg.validate_each_epoch else None
    check_engine(cfg.engine, cfg.method)
    prompt = load_prompt(cfg.prompt)
    task = task.for_prompt(prompt)  # a prompt with swapped codes trains the digits it asks for
    resume = _check_resume(out, cfg)

    render = {"selection": cfg.slices, "modalities": cfg.modalities, "task": task}
    train_raw, problems = cohort_examples(work, train_cohort, orientations=cfg.orientations,
                                          max_slices_per_patient=cfg.max_slices_per_patient, **render)
    if not train_raw:
        raise DataError(f"{work}: the training cohort of fold {cfg.fold} gave no slice ({len(problems)} "
                        f"patient/orientation without slices)")
    names = [slug(c) for c in task.classes]
    train, balance = balance_examples(train_raw, seed=cfg.seed, names=names) if cfg.balance else (
        train_raw, {name: sum(e.label == i for e in train_raw) for i, name in enumerate(names)})
    val: list[Example] = []
    if val_cohort is not None:
        val, val_problems = cohort_examples(
            work, val_cohort, orientations=cfg.orientations,
            max_slices_per_patient=cfg.max_val_slices_per_patient or cfg.max_slices_per_patient, **render)
        problems += val_problems
    fingerprint = examples_fingerprint(train)
    if resume is not None and resume["fingerprint"] != fingerprint:
        raise ConfigError(f"{out}: its checkpoint was trained on other slices (the split or the data "
                          f"changed); use a new --out")

    out.mkdir(parents=True, exist_ok=True)
    run_config = {**cfg.model_dump(), "base_model": base_model, "work": str(work.resolve()),
                  "prompt_name": prompt.name, "prompt_sha": prompt.sha, "task": task.describe()}
    from medvlm.runinfo import write_run_info

    write_run_info(out, kind="finetune", config=run_config)

    context = _Context(cfg=cfg, task=task, base_model=base_model, prompt=prompt.text, out=out, train=train,
                       val=val,
                       fingerprint=fingerprint)
    if cfg.engine == "trl":
        model, processor, state = train_trl(context)
    else:
        model, processor, state = train_peft(context)

    selected = state["best"] if (cfg.select == "best" and state.get("best")) else None
    if selected is not None and (out / BEST).is_file():
        load_adapter_weights(model, out / BEST, advice=f"move {out} aside to fine-tune again")
    selected_epoch = selected["epoch"] if selected else state["epoch"]
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    from medvlm._io import write_json_atomic

    summary = {
        "out": str(out), "steps": state["step"], "epochs": state["epoch"], "selected_epoch": selected_epoch,
        "val": _epoch_metrics(state["log"], selected_epoch), "balance": balance,
        "n_train": len(train), "n_train_slices": len(train_raw), "n_val": len(val),
        "problems": problems, "merged": None,
    }
    write_json_atomic(out / "finetune_config.json", {
        "base_model": base_model, "task": task.name, "prompt_name": prompt.name, "prompt_sha": prompt.sha,
        "prompt_text": prompt.text, "method": cfg.method, "engine": cfg.engine,
        "hyperparameters": cfg.model_dump(), "fold": cfg.fold, "balance": balance,
        "n_train": len(train), "n_train_slices": len(train_raw), "n_val": len(val),
        "steps": state["step"], "selected_epoch": selected_epoch, "select": cfg.select,
        "select_metric": cfg.select_metric, "val": summary["val"], "problems": problems,
        "train_fingerprint": fingerprint,
    })
    write_train_log(out / "train_log.csv", state["log"])
    plot_loss_curve(out / "train_log.csv", out / "loss_curve.png")
    if cfg.merge:
        from medvlm.finetune.merge import merge_adapter

        summary["merged"] = str(merge_adapter(out, base_model=base_model))
    return summary


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in RESUMABLE_FIELDS}


def _check_resume(out: Path, cfg: FinetuneConfig) -> dict[str, Any] | None:
    folder = latest_checkpoint(out)
    if folder is None:
        return None
    state = read_state(folder)
    old, new = _comparable(state["config"]), _comparable(cfg.model_dump())
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diff:
        k = diff[0]
        raise ConfigError(f"{out}: has a checkpoint made with {k}={old.get(k)!r}, not {new.get(k)!r}; "
                          f"rerun with the same options to resume, or use a new --out")
    return state


# ---------------------------------------------------------------------------------------------- PEFT loop
def epoch_order(n: int, *, seed: int, epoch: int) -> list[int]:
    """The example order of ``epoch`` (1-based): a permutation that depends only on seed and epoch."""
    import torch

    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def train_peft(ctx: _Context) -> tuple[Any, Any, dict[str, Any]]:
    """The plain PEFT loop: AdamW on the LoRA parameters, loss on the answer tokens, resumable."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    cfg = ctx.cfg
    model, processor = load_model(ctx)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = steps_per_epoch(len(ctx.train), cfg.batch_size, cfg.grad_accum)
    total = cfg.max_steps or cfg.epochs * per_epoch
    folder = latest_checkpoint(ctx.out)
    if folder is not None:
        state = load_checkpoint(folder, model=model, optimizer=optimizer)
    else:
        state = {"step": 0, "epoch": 0, "log": [], "best": None}
        if ctx.val:  # the base model's validation metrics, logged at step 0
            metrics = validate(model, processor, ctx.prompt, ctx.val, ctx.task)
            state["log"].append({"step": 0, "epoch": 0, **metrics})
    state.update(config=cfg.model_dump(), fingerprint=ctx.fingerprint, steps_per_epoch=per_epoch)
    device = next(model.parameters()).device
    model.train()
    mb = cfg.batch_size
    with Progress(TextColumn("finetune"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[info]}"), transient=True) as progress:
        task = progress.add_task("steps", total=total, completed=state["step"], info="")
        while state["step"] < total:
            step = state["step"]
            epoch = step // per_epoch + 1
            order = epoch_order(len(ctx.train), seed=cfg.seed, epoch=epoch)
            in_epoch = step - (epoch - 1) * per_epoch
            chunk = order[in_epoch * mb * cfg.grad_accum:(in_epoch + 1) * mb * cfg.grad_accum]
            micro = [chunk[i:i + mb] for i in range(0, len(chunk), mb)]
            losses = []
            n_in_step = len(chunk)
            for idx in micro:
                batch = make_batch(processor, ctx.prompt, [ctx.train[i] for i in idx], ctx.task).to(device)
                loss = model(**batch).loss
                (loss * len(idx) / n_in_step).backward()
                losses.append(float(loss.detach()) * len(idx) / n_in_step)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] = step + 1
            state["epoch"] = epoch
            state["log"].append({"step": step + 1, "epoch": epoch, "loss": sum(losses), "lr": cfg.lr})
            progress.update(task, completed=state["step"], info=f"loss {sum(losses):.4f}")
            epoch_end = state["step"] % per_epoch == 0 or state["step"] == total
            if epoch_end and ctx.val:
                metrics = validate(model, processor, ctx.prompt, ctx.val, ctx.task)
                state["log"].append({"step": state["step"], "epoch": epoch, **metrics})
                if _improved(metrics, state["best"], cfg.select_metric):
                    save_adapter_weights(model, ctx.out / BEST)
                    state["best"] = {"epoch": epoch, "step": state["step"],
                                     "value": metrics[cfg.select_metric]}
            if epoch_end or state["step"] % cfg.save_steps == 0:
                save_checkpoint(ctx.out, model=model, optimizer=optimizer, state=state)
    model.eval()
    return model, processor, state


def _epoch_metrics(log: list[dict[str, Any]], epoch: int) -> dict[str, float]:
    rows = [r for r in log if r.get("epoch") == epoch and "val_p_true" in r]
    return {k: v for k, v in rows[-1].items() if k.startswith("val_")} if rows else {}


# ---------------------------------------------------------------------------------------------- outputs
def write_train_log(path: Path, log: list[dict[str, Any]]) -> None:
    """``train_log.csv``: the columns of :data:`LOG_COLUMNS`, empty where a row has no value."""
    import csv
    import io

    from medvlm._io import write_text_atomic

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in log:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k, "")) for k in LOG_COLUMNS})
    write_text_atomic(path, buf.getvalue())


def plot_loss_curve(log_csv: Path, png: Path) -> None:
    """Training loss per step and validation P(true class) per epoch, one figure (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from medvlm._io import atomic_path

    log = pd.read_csv(log_csv)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    steps = log.dropna(subset=["loss"])
    ax.plot(steps["step"], steps["loss"], color="tab:blue", lw=1, label="training loss (answer tokens)")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    val = log.dropna(subset=["val_p_true"])
    if len(val):
        ax2 = ax.twinx()
        ax2.plot(val["step"], val["val_p_true"], "o-", color="tab:orange", label="val mean P(true class)")
        ax2.set_ylabel("val mean P(true class)")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Fine-tuning")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def remove_training_state(out: Path) -> None:
    """Delete ``checkpoint/`` and the best-epoch weights (the adapter itself stays)."""
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    (out / BEST).unlink(missing_ok=True)
