"""The ``transformers`` backend: a local or cached image-text-to-text model via ``from_pretrained``.

Chat text (shared with fine-tuning): :func:`build_chat_text` renders the user turn (image, then the
prompt) with the processor's chat template and ends with the assistant header followed by
:data:`~medvlm.vlm.prompts.ANSWER_PREFIX` (``"Choice:"``), so the model only has to write the digit and
its reasoning. With ``answer`` it renders the full training text ending in ``"Choice: <answer>"`` and the
end-of-turn token.
"""

from __future__ import annotations

from typing import Any

from medvlm.vlm.prompts import ANSWER_PREFIX


def _messages(prompt_text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt_text}]}]


def build_chat_text(processor: Any, prompt_text: str, answer: int | str | None = None) -> str:
    """Chat text for one image + prompt.

    - ``answer is None``: ``<user turn with <|image|> and prompt_text><assistant header>Choice:`` -- the
      model continues with `` 1 Reasoning: ...`` (generate) or its next tokens are scored (logprobs).
    - ``answer`` given (0/1/2, or a string): the same text followed by `` <answer>`` and the end of the
      assistant turn, for supervised fine-tuning. A string that already starts with ``Choice:`` is used
      as the whole answer (e.g. ``"Choice: 1 Reasoning: enhancing rim"``).

    Pass the result to the processor with ``add_special_tokens=False`` (the template adds BOS).

    >>> from medvlm.vlm.tiny import build_tiny_processor
    >>> proc = build_tiny_processor()
    >>> build_chat_text(proc, "Grade?")[-35:]
    'assistant<|end_header_id|>\\n\\nChoice:'
    >>> build_chat_text(proc, "Grade?", answer=1)[-33:]
    '_header_id|>\\n\\nChoice: 1<|eot_id|>'
    """
    head = processor.apply_chat_template(_messages(prompt_text), add_generation_prompt=True, tokenize=False)
    if answer is None:
        return head + ANSWER_PREFIX
    answer_text = str(answer)
    if not answer_text.startswith(ANSWER_PREFIX):
        answer_text = f"{ANSWER_PREFIX} {answer_text}"
    full = processor.apply_chat_template(
        _messages(prompt_text) + [{"role": "assistant", "content": [{"type": "text", "text": answer_text}]}],
        add_generation_prompt=False, tokenize=False)
    if not full.startswith(head):  # a template that renders the assistant turn unusually: fall back
        eos = getattr(getattr(processor, "tokenizer", processor), "eos_token", "") or ""
        full = head + answer_text + eos
    return full


def encode_batch(processor: Any, images: list[Any], texts: list[str]) -> Any:
    """Processor inputs (``BatchFeature`` of tensors) for a batch of PIL images and chat texts.

    One image per text; left padding (so the last position is each row's next-token position).
    """
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.padding_side = "left"
    return processor(images=[[im] for im in images], text=texts, return_tensors="pt", padding=True,
                     add_special_tokens=False)
