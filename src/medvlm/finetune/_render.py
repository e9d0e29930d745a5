"""Chat text, model inputs and class scoring, shared with ``eval-vlm``'s transformers backend.

Training must see exactly what evaluation sends: the same image bytes, the same chat text up to the
answer prefix (``Choice:``), and as target the token that log-prob scoring reads next. This module is
the one place that binds fine-tuning to the backend's formatting.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from medvlm.tasks.base import Task


def image_from_png(png: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB")


def prompt_text(processor: Any, prompt: str, task: Task) -> str:
    """The chat text the scorer feeds: user turn (image + prompt), assistant header, the task's answer
    prefix (``Choice:``)."""
    from medvlm.vlm.hf import build_chat_text

    return build_chat_text(processor, prompt, prefix=task.answer_prefix)


def answer_text(processor: Any, prompt: str, label: int, task: Task) -> str:
    """:func:`prompt_text` followed by `` <label>`` (the class's answer code) and the end of the
    assistant turn."""
    from medvlm.vlm.hf import build_chat_text

    return build_chat_text(processor, prompt, answer=task.codes[int(label)], prefix=task.answer_prefix)


def encode(processor: Any, images: list[Any], texts: list[str], *, padding_side: str) -> Any:
    return processor(images=[[im] for im in images], text=texts, return_tensors="pt", padding=True,
                     padding_side=padding_side, add_special_tokens=False)


def scoring_context(processor: Any, prompt: str, task: Task) -> tuple[str, list[int]]:
    """``(context_text, code_ids)``: the text ``eval-vlm``'s log-prob scoring feeds (the chat text, the
    answer prefix and the separator, e.g. ``"...Choice: "``) and the token ids of the task's answer codes
    read at its last position (:func:`medvlm.vlm.hf.answer_token_ids`). The training target
    (:func:`answer_text`) starts with exactly these tokens, so training raises what scoring reads."""
    from medvlm.vlm.hf import answer_token_ids

    sep, ids = answer_token_ids(processor.tokenizer, task.answer_prefix, task.codes)
    return prompt_text(processor, prompt, task) + sep, list(ids)


def class_probs(model: Any, processor: Any, pngs: list[bytes], prompt: str, task: Task, *,
                batch_size: int = 8) -> Any:
    """P(answer = code) per image, shape ``(n, number of codes)``: softmax over the code tokens' logits
    at the position where the answers start to differ (one forward pass per batch, left padding)."""
    import numpy as np
    import torch

    text, ids = scoring_context(processor, prompt, task)
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(pngs), batch_size):
            chunk = pngs[start:start + batch_size]
            enc = encode(processor, [image_from_png(p) for p in chunk], [text] * len(chunk),
                         padding_side="left").to(device)
            logits = model(**enc).logits[:, -1, :].float()
            out.append(torch.softmax(logits[:, ids], -1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(ids)))
