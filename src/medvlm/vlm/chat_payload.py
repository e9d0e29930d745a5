"""The chat-completions request body of one :class:`~medvlm.vlm.types.VLMRequest` (OpenAI's format).

Sent as is by the ``openai`` backend (:mod:`medvlm.vlm.openai_compat`) and, translated by LiteLLM for
the provider, by the ``litellm`` backend (:mod:`medvlm.vlm.litellm_backend`): the image as a base64 PNG
data URI (image first, then the prompt), few-shot examples as earlier turns, the decoding settings, and
the answer constraint of ``structured`` (a JSON schema, or vLLM's choice over the request's codes).
"""

from __future__ import annotations

import base64
from typing import Any

from medvlm.vlm.types import Decoding, VLMRequest

#: how servers take a choice constraint: vLLM before 0.10 (and SGLang) ``guided_choice``; vLLM 0.10 and
#: later ``structured_outputs: {"choice": [...]}``. The probe tries them in this order.
CHOICE_FIELDS = ("guided_choice", "structured_outputs")


def json_schema(codes: tuple[str, ...]) -> dict[str, Any]:
    """``{"choice": <one of the codes>, "reasoning": "..."}`` as a JSON schema."""
    return {
        "type": "object",
        "properties": {"choice": {"type": "integer", "enum": [int(c) for c in codes]},
                       "reasoning": {"type": "string"}},
        "required": ["choice", "reasoning"],
        "additionalProperties": False,
    }


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...``"""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _user_turn(image: bytes, text: str) -> dict[str, Any]:
    """A user message: the image (when there is one) as a base64 PNG data URI, then the text."""
    parts = [{"type": "image_url", "image_url": {"url": data_uri(image)}}] if image else []
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


def build_payload(model: str, request: VLMRequest, decoding: Decoding, *,
                  choice_field: str = CHOICE_FIELDS[0]) -> dict[str, Any]:
    """The chat-completions JSON body for one request (``temperature``/``top_p`` None: left out, so the
    server applies the model's own default). A request without image bytes (``eval-vlm --image none``)
    is a text-only message. The request's few-shot examples (``request.shots``) come first, each as a
    user turn (its image, then its prompt) and an assistant turn (its answer)."""
    messages: list[dict[str, Any]] = []
    for shot in request.shots:
        messages += [_user_turn(shot.image, shot.prompt), {"role": "assistant", "content": shot.answer}]
    body: dict[str, Any] = {
        "model": model,
        "messages": [*messages, _user_turn(request.image, request.prompt)],
        "max_tokens": decoding.max_new_tokens,
    }
    if decoding.temperature is not None:
        body["temperature"] = decoding.temperature
    if decoding.top_p is not None:
        body["top_p"] = decoding.top_p
    seed = decoding.request_seed(request.repeat)
    if seed is not None:
        body["seed"] = seed
    if decoding.scoring == "logprobs":
        body["logprobs"] = True
        body["top_logprobs"] = decoding.top_logprobs
    if decoding.structured == "json":
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "answer_choice", "strict": True,
                                                   "schema": json_schema(request.codes)}}
    elif decoding.structured == "choice":
        if choice_field == "structured_outputs":
            body["structured_outputs"] = {"choice": list(request.codes)}
        else:
            body["guided_choice"] = list(request.codes)
    body.update(decoding.extra_body)
    return body
