"""Requests, answers and decoding settings shared by the backends, the cache and the engine."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCORING = ("generate", "logprobs")
STRUCTURED = ("none", "choice", "json")


class Decoding(BaseModel):
    """Everything that changes an answer besides model, prompt and image; all of it is in the cache key.

    ``temperature`` 0 = greedy. ``temperature``/``top_p`` None = the model's (server's) own default:
    the ``openai`` backend leaves the field out of the request, ``transformers`` uses the model's
    ``generation_config`` (None is a cache-key value of its own; numbers key as they always did).
    ``seed``: base sampling seed (request seed = seed + repeat index), so repeats of a sampled answer
    differ but reproduce. ``structured``: output constraint (``choice`` = one of "0"/"1"/"2", ``json`` =
    ``{"choice", "reasoning"}``). ``extra_body``: extra JSON fields sent to an OpenAI-compatible
    server as is.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scoring: Literal["generate", "logprobs"] = "generate"
    max_new_tokens: int = Field(96, ge=1)
    temperature: float | None = Field(0.0, ge=0.0)
    top_p: float | None = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = 0
    structured: Literal["none", "choice", "json"] = "none"
    top_logprobs: int = Field(20, ge=1, le=20)
    extra_body: dict[str, Any] = Field(default_factory=dict)

    def request_seed(self, repeat: int) -> int | None:
        return None if self.seed is None else self.seed + repeat


@dataclass(frozen=True)
class VLMRequest:
    """One model call: an image (PNG bytes) and a prompt, the ``repeat``-th time. ``meta`` is opaque to
    backends (the engine puts ``(patient_id, orientation, slice_index)`` there); ``key`` is the cache key."""

    key: str
    image: bytes
    prompt: str
    repeat: int
    meta: tuple = ()


@dataclass
class VLMResponse:
    """What came back: ``raw`` text (verbatim), ``choice`` (0/1/2/None), class ``probs``
    ``(p_lgg, p_hgg, p_ng)`` normalised over the three answers and ``mass`` (their share of the full
    next-token distribution) for log-prob scoring; ``error`` set when the call failed after retries."""

    raw: str | None = None
    choice: int | None = None
    probs: tuple[float, float, float] | None = None
    mass: float | None = None
    error: str | None = None
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.error is not None


def image_sha(image: bytes) -> str:
    return hashlib.sha256(image).hexdigest()


def cache_key(*, backend: str, model: str, adapter: str | None, prompt: str, image: bytes,
              decoding: Decoding, repeat: int) -> str:
    """SHA-256 over what changes the answer (never timeouts, retries, server URLs or concurrency).

    ``model``/``adapter`` are identities (a name, or a fingerprint of a local folder).
    """
    payload = {
        "v": 1, "backend": backend, "model": model, "adapter": adapter, "prompt": prompt,
        "image": image_sha(image), "decoding": decoding.model_dump(mode="json"), "repeat": int(repeat),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def normalise_probs(p0: float, p1: float, p2: float) -> tuple[tuple[float, float, float] | None, float]:
    """Raw probabilities of the three answer tokens -> (normalised triple or None if all 0, their mass).

    >>> normalise_probs(1.0, 3.0, 0.0)
    ((0.25, 0.75, 0.0), 4.0)
    """
    mass = float(p0 + p1 + p2)
    if mass <= 0:
        return None, 0.0
    return (p0 / mass, p1 / mass, p2 / mass), mass
