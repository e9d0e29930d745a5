"""What both fine-tuning engines share (the PEFT loop in :mod:`medvlm.finetune.train` and TRL in
:mod:`medvlm.finetune._trl`): the run context, the model with its fresh LoRA adapter, the training batches,
the per-epoch validation and the best-epoch bookkeeping.

Heavy libraries (torch, numpy, peft) are imported inside the functions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.finetune.config import FinetuneConfig
from medvlm.finetune.data import Example

if TYPE_CHECKING:  # pragma: no cover
    from medvlm.tasks.base import Task

#: The adapter weights of the best epoch so far, in the ADAPTER folder (``--select best``).
BEST = "best_adapter.safetensors"


class _Context:
    """What an engine needs: config, task, base model path, prompt text, output folder, examples."""

    def __init__(self, **kwargs: Any) -> None:
        self.cfg: FinetuneConfig = kwargs["cfg"]
        self.task: Task = kwargs["task"]
        self.base_model: str = kwargs["base_model"]
        self.prompt: str = kwargs["prompt"]
        self.out: Path = kwargs["out"]
        self.train: list[Example] = kwargs["train"]
        self.val: list[Example] = kwargs["val"]
        self.fingerprint: str = kwargs["fingerprint"]


def steps_per_epoch(n_examples: int, batch_size: int, grad_accum: int) -> int:
    """Optimiser steps in one pass over ``n_examples`` (the last step may hold fewer examples).

    >>> steps_per_epoch(10, 4, 1), steps_per_epoch(10, 2, 2), steps_per_epoch(8, 4, 2)
    (3, 3, 1)
    """
    return math.ceil(n_examples / (batch_size * grad_accum))


def make_batch(processor: Any, prompt: str, examples: list[Example], task: Task) -> Any:
    """Model inputs for ``examples`` with ``labels`` = the answer tokens (everything else -100).

    Shapes: ``input_ids``/``attention_mask``/``labels`` ``(B, T)`` (right padding), ``pixel_values``
    ``(B, 1, tiles, 3, H, W)`` and the cross-attention inputs of the processor.
    """
    import torch

    import medvlm.finetune._render as _render

    prefix = _render.prompt_text(processor, prompt, task)
    texts = [_render.answer_text(processor, prompt, e.label, task) for e in examples]
    enc = _render.encode(processor, [_render.image_from_png(e.png) for e in examples], texts,
                         padding_side="right")
    prefix_ids = processor.tokenizer(prefix, add_special_tokens=False)["input_ids"]
    context, class_ids = _render.scoring_context(processor, prompt, task)
    n_prefix = len(prefix_ids)
    n_context = len(processor.tokenizer(context, add_special_tokens=False)["input_ids"])
    labels = torch.full_like(enc["input_ids"], -100)
    for b, e in enumerate(examples):
        n_tokens = int(enc["attention_mask"][b].sum())
        if (enc["input_ids"][b, :n_prefix].tolist() != prefix_ids
                or int(enc["input_ids"][b, n_context]) != class_ids[e.label]):
            raise RuntimeError("the training text does not continue the scoring prompt with the label token")
        labels[b, n_prefix:n_tokens] = enc["input_ids"][b, n_prefix:n_tokens]
    enc["labels"] = labels
    return enc


def load_model(ctx: _Context) -> tuple[Any, Any]:
    """The base model wrapped with a fresh LoRA adapter (seeded), and the processor."""
    import torch
    from peft import get_peft_model

    from medvlm.finetune._model import device_of, load_base_model, load_processor, lora_config

    cfg = ctx.cfg
    torch.manual_seed(cfg.seed)
    device = device_of(cfg.engine)
    processor = load_processor(ctx.base_model)
    lcfg = lora_config(target=cfg.target, rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout)
    if cfg.engine == "unsloth":
        from medvlm.finetune._unsloth import load_unsloth

        model = load_unsloth(ctx.base_model, cfg)
    else:
        model = get_peft_model(load_base_model(ctx.base_model, method=cfg.method, device=device), lcfg)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    return model, processor


def validate(model: Any, processor: Any, prompt: str, val: list[Example], task: Task) -> dict[str, float]:
    """Validation metrics of ``model`` on ``val`` (slices), from log-prob class scoring.

    ``val_p_true``: mean P(true class) (softmax over the task's answer codes); ``val_nll``: mean -log of
    it; ``val_accuracy`` / ``val_balanced_accuracy``: slice argmax over the codes against the label;
    ``val_patient_balanced_accuracy``: per patient and orientation, majority of slice answers (ties and
    abstaining majorities count as wrong), balanced over the classes.
    """
    import numpy as np

    import medvlm.finetune._render as _render

    if not val:
        return {}
    was_training = model.training
    model.eval()
    probs = _render.class_probs(model, processor, [e.png for e in val], prompt, task)
    if was_training:
        model.train()
    labels = np.array([e.label for e in val])
    p_true = probs[np.arange(len(val)), labels]
    preds = probs.argmax(1)
    groups: dict[tuple[str, str], list[int]] = {}
    for e, p in zip(val, preds, strict=True):
        groups.setdefault((e.patient_id, e.orientation), []).append(int(p))
    g_labels, g_preds = [], []
    for (pid, _o), votes in groups.items():
        counts = [votes.count(c) for c in range(task.n_classes)]
        top = max(counts)
        g_labels.append(next(e.label for e in val if e.patient_id == pid))
        g_preds.append(counts.index(top) if top and counts.count(top) == 1 else -1)
    return {
        "val_nll": float(-np.log(np.clip(p_true, 1e-12, None)).mean()),
        "val_p_true": float(p_true.mean()),
        "val_accuracy": float((preds == labels).mean()),
        "val_balanced_accuracy": balanced_accuracy(labels, preds, task.n_classes),
        "val_patient_balanced_accuracy": balanced_accuracy(np.array(g_labels), np.array(g_preds),
                                                           task.n_classes),
    }


def balanced_accuracy(labels: Any, preds: Any, n_classes: int = 2) -> float:
    """Mean recall over the classes ``0..n_classes-1`` present in ``labels`` (any other prediction is
    wrong).

    >>> import numpy as np
    >>> balanced_accuracy(np.array([0, 0, 1, 1, 1]), np.array([0, 2, 1, 1, 0]))
    0.5833333333333333
    """
    import numpy as np

    recalls = [float((preds[labels == c] == c).mean()) for c in range(n_classes) if (labels == c).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


def _improved(metrics: dict[str, float], best: dict[str, Any] | None, key: str) -> bool:
    value = metrics.get(key)
    if value is None or value != value:  # NaN
        return False
    return best is None or value > best["value"]
