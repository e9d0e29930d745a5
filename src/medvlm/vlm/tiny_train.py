"""Teach the tiny stand-in VLM the study's answer format, and nothing about the images.

A randomly initialised model writes noise after ``Choice:``, so every answer is unparsed. About a hundred
steps of supervised training on made-up inputs fix that: synthetic brain-like pictures (an ellipse with
noise, sometimes a bright blob; also blank and noise images, and no image at all) asked with every
built-in prompt, each answered ``Choice: <code> Reasoning: stand-in, format only.`` and then the end of
the turn. The code is drawn by a seeded generator independently of the picture: :data:`ANSWER_CODE`
(``"1"``: the positive class in the study's prompt) with probability :data:`MAIN_SHARE`, the prompt's
other codes share the rest. So the trained stand-in answers in the study's format, mostly with
one class whatever it is shown (as the study's zero-shot Llama-3.2-Vision did), its answers carry no
grade information, and fine-tuning on real labels (``medvlm finetune``) has something to move.

Deterministic: fixed seeds, ``torch.use_deterministic_algorithms(True)`` and one CPU thread while it
trains (the global torch state is restored afterwards), so two builds write identical weights.
"""

from __future__ import annotations

import re
from typing import Any

#: the code the stand-in mostly answers, its share of the training answers, and the reasoning it writes
ANSWER_CODE = "1"
MAIN_SHARE = 0.8
REASONING = "stand-in, format only."
#: default number of training steps of ``make-tiny-vlm`` (0: the untrained random model), batch size, lr
TRAIN_STEPS = 100
BATCH_SIZE = 8
LEARNING_RATE = 3e-3
#: parameters left as built (Mllama's cross-attention gates, opened to 1.0)
GATES = ("cross_attn_attn_gate", "cross_attn_mlp_gate")
#: every TEXT_ONLY_EVERY-th batch has no image (``eval-vlm --image none`` sends the prompt alone)
TEXT_ONLY_EVERY = 5
#: prompts besides the built-in ones, so that a user's prompt is answered in the format too
EXTRA_PROMPTS = (
    "Grade?",
    "Does this image show the finding? Classify it as Negative (0) or Positive (1). Respond only in the "
    "following format: Choice: <0 or 1> Reasoning: <Provide concise reasoning>.",
)


def prompt_codes(text: str) -> tuple[str, ...]:
    """The answer digits a prompt names as ``(d)``, in order (at least ``("0", "1")``).

    >>> prompt_codes("Class A (0), Class B (1), or neither (2)")
    ('0', '1', '2')
    >>> prompt_codes("Grade?")
    ('0', '1')
    """
    found = sorted(set(re.findall(r"\((\d)\)", text)))
    return tuple(found) if len(found) >= 2 else ("0", "1")


def training_prompts() -> list[str]:
    """The texts asked while training: every built-in prompt, then :data:`EXTRA_PROMPTS`."""
    from medvlm.vlm.prompts import builtin_prompts, load_prompt

    return [load_prompt(name).text for name in builtin_prompts()] + list(EXTRA_PROMPTS)


def synthetic_picture(rng: Any) -> Any:
    """A made-up grey picture (PIL RGB) of a random size: an ellipse of noisy tissue on black, often with
    a bright blob; one in eight blank, one in eight pure noise."""
    import numpy as np
    from PIL import Image

    h, w = (int(x) for x in rng.choice([32, 48, 64, 96, 128], size=2))
    kind = rng.integers(8)
    if kind == 0:
        img = np.full((h, w), rng.integers(0, 256), dtype=np.float64)
    elif kind == 1:
        img = rng.uniform(0, 255, size=(h, w))
    else:
        yy, xx = np.mgrid[0:h, 0:w]
        cy, cx = h / 2 + rng.normal(0, h / 10), w / 2 + rng.normal(0, w / 10)
        ry, rx = h * rng.uniform(0.3, 0.48), w * rng.uniform(0.3, 0.48)
        brain = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img = np.where(brain, rng.uniform(60, 140) + rng.normal(0, 20, size=(h, w)), 0.0)
        if rng.random() < 0.7:
            by, bx, r = cy + rng.normal(0, ry / 3), cx + rng.normal(0, rx / 3), rng.uniform(2, min(h, w) / 5)
            img = np.where((yy - by) ** 2 + (xx - bx) ** 2 <= r * r, rng.uniform(180, 255), img)
    grey = np.clip(img, 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _answer(codes: tuple[str, ...], rng: Any) -> str:
    """``Choice: <code> Reasoning: ...``: :data:`ANSWER_CODE` with probability :data:`MAIN_SHARE`."""
    others = [c for c in codes if c != ANSWER_CODE]
    code = ANSWER_CODE if rng.random() < MAIN_SHARE or not others else others[int(rng.integers(len(others)))]
    return f"Choice: {code} Reasoning: {REASONING}"


def _batch(processor: Any, prompts: list[str], rng: Any, *, with_images: bool) -> Any:
    """Inputs with ``labels`` = the assistant turn's tokens (everything before it masked with -100)."""
    from medvlm.vlm.hf import build_chat_text, encode_batch

    tok = processor.tokenizer
    picks = [prompts[int(i)] for i in rng.integers(len(prompts), size=BATCH_SIZE)]
    images = [synthetic_picture(rng) for _ in picks] if with_images else []
    texts, n_answer = [], []
    for text in picks:
        head = build_chat_text(processor, text, prefix="", image=with_images)
        full = build_chat_text(processor, text, answer=_answer(prompt_codes(text), rng), image=with_images)
        head_ids = tok(head, add_special_tokens=False)["input_ids"]
        full_ids = tok(full, add_special_tokens=False)["input_ids"]
        if full_ids[:len(head_ids)] != head_ids:  # cannot happen with the tiny tokenizer; never train wrong
            raise RuntimeError("the tiny tokenizer split the chat text unexpectedly")
        texts.append(full)
        n_answer.append(len(full_ids) - len(head_ids))
    inputs = encode_batch(processor, images, texts)
    labels = inputs["input_ids"].clone()
    labels[:] = -100
    for row, n in enumerate(n_answer):  # left padding: the answer is each row's last n tokens
        labels[row, -n:] = inputs["input_ids"][row, -n:]
    inputs["labels"] = labels
    return inputs


def train_tiny(model: Any, processor: Any, *, steps: int = TRAIN_STEPS, seed: int = 0) -> list[float]:
    """Train ``model`` (in place) for ``steps`` AdamW steps to answer in the study's format; returns the
    loss of each step. The cross-attention gates (:data:`GATES`) are not trained. ``steps`` 0 leaves the
    model as it is."""
    import numpy as np
    import torch

    if steps <= 0:
        return []
    prompts = training_prompts()
    rng = np.random.default_rng(seed)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    rng_state = torch.random.get_rng_state()
    losses: list[float] = []
    try:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        torch.manual_seed(seed)
        model.train()
        # the cross-attention gates stay open (1.0, see build_tiny_model): fine-tuning can use the image
        params = [p for name, p in model.named_parameters() if not name.endswith(GATES)]
        optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=0.0)
        for step in range(steps):
            inputs = _batch(processor, prompts, rng, with_images=(step + 1) % TEXT_ONLY_EVERY != 0)
            loss = model(**inputs).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        model.eval()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.random.set_rng_state(rng_state)
    return losses
