"""``--engine trl``: TRL's ``SFTTrainer`` driving the same batches as the PEFT loop.

The Mllama pitfalls (see NOTES): the prompt/completion dataset format fails (the cross-attention mask
is built from the prompt only), and ``assistant_only_loss`` needs ``{% generation %}`` markers the real
Llama-3.2-Vision template lacks. So the dataset holds example indices only, dataset preparation is
skipped, and our collator (:func:`medvlm.finetune._steps.make_batch`) renders exactly what ``eval-vlm``
scores, with labels on the answer tokens. Checkpoints and resuming are TRL's (``ADAPTER/trl/``); a
damaged checkpoint (:func:`check_trl_checkpoint`) is a one-line DataError naming the file, not moved aside.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from medvlm._io import write_json_atomic
from medvlm.errors import DataError, failure_reason
from medvlm.finetune._checkpoint import save_adapter_weights
from medvlm.finetune._steps import (
    BEST,
    _Context,
    _improved,
    load_model,
    make_batch,
    steps_per_epoch,
    validate,
)


def check_trl_checkpoint(folder: Path, val_file: Path) -> None:
    """A DataError naming the file when the Trainer checkpoint ``folder`` (or ``trl_val.json``) is damaged:
    JSON files that are not objects, weights or torch files that cannot be read. (Files of another model
    that read fine are found by the Trainer itself.)"""
    import zipfile

    from safetensors import safe_open

    advice = f"move the folder {folder.parent} aside (or delete it) to start this fine-tuning again"
    for path in (folder / "trainer_state.json", val_file):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"{path}: unreadable ({failure_reason(exc)}); {advice}") from None
        ok = isinstance(data, dict)
        if ok and path == val_file:
            best = data.get("best")
            ok = isinstance(data.get("val_rows"), list) and (best is None or isinstance(best, dict))
        if not ok:
            raise DataError(f"{path}: not the JSON object medvlm writes; {advice}")
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                list(f.keys())
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError: unreadable
            raise DataError(f"{path}: unreadable weights ({failure_reason(exc)}); {advice}") from None
    for path in sorted([*folder.glob("*.pt"), *folder.glob("*.pth")]):
        readable = path.is_file() and zipfile.is_zipfile(path)
        if readable:
            with zipfile.ZipFile(path) as z:
                readable = any(n.endswith("/data.pkl") for n in z.namelist())
        if not readable:
            raise DataError(f"{path}: not a torch file (damaged or truncated); {advice}")


def train_trl(ctx: _Context) -> tuple[Any, Any, dict[str, Any]]:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig, SFTTrainer

    cfg = ctx.cfg
    model, processor = load_model(ctx)
    per_epoch = steps_per_epoch(len(ctx.train), cfg.batch_size, cfg.grad_accum)
    trl_dir = ctx.out / "trl"
    val_file = ctx.out / "trl_val.json"
    resume = get_last_checkpoint(str(trl_dir)) if trl_dir.is_dir() else None
    if resume:
        check_trl_checkpoint(Path(resume), val_file)
    if resume and val_file.is_file():
        saved = json.loads(val_file.read_text())
    else:
        saved = {"val_rows": [], "best": None}
        if ctx.val:
            metrics = validate(model, processor, ctx.prompt, ctx.val, ctx.task)
            saved["val_rows"].append({"step": 0, "epoch": 0, **metrics})

    class _Validate(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if not ctx.val:
                return
            epoch = math.ceil(state.global_step / per_epoch)
            metrics = validate(model, processor, ctx.prompt, ctx.val, ctx.task)
            saved["val_rows"].append({"step": state.global_step, "epoch": epoch, **metrics})
            if _improved(metrics, saved["best"], cfg.select_metric):
                save_adapter_weights(model, ctx.out / BEST)
                saved["best"] = {"epoch": epoch, "step": state.global_step,
                                 "value": metrics[cfg.select_metric]}
            write_json_atomic(val_file, saved)

    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(trl_dir), max_steps=cfg.max_steps or -1, num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, lr_scheduler_type="constant", warmup_steps=0,
        logging_steps=1, save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=1,
        seed=cfg.seed, data_seed=cfg.seed, report_to="none", use_cpu=not cuda, bf16=cuda,
        remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True}, max_length=None,
        dataloader_num_workers=0, disable_tqdm=True)
    dataset = Dataset.from_dict({"idx": list(range(len(ctx.train)))})

    def collate(rows: list[dict[str, int]]) -> Any:
        return make_batch(processor, ctx.prompt, [ctx.train[r["idx"]] for r in rows], ctx.task)

    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, data_collator=collate,
                         processing_class=processor, callbacks=[_Validate()])
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(trl_dir / "final"))
    write_json_atomic(val_file, saved)
    log = [{"step": h["step"], "epoch": math.ceil(h["step"] / per_epoch), "loss": h["loss"],
            "lr": h.get("learning_rate")} for h in trainer.state.log_history if "loss" in h]
    log = sorted(log + saved["val_rows"], key=lambda r: (r["step"], "loss" not in r))
    step = trainer.state.global_step
    model.eval()
    return model, processor, {"step": step, "epoch": math.ceil(step / per_epoch), "log": log,
                              "best": saved["best"]}
