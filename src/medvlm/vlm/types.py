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
    differ but reproduce. ``structured``: output constraint (``choice`` = one of the request's answer
    codes, ``json`` =
    ``{"choice", "reasoning"}``). ``extra_body``: extra JSON fields sent to an OpenAI-compatible
    server as is.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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
class Shot:
    """One labelled in-context example (``eval-vlm --shots K``), shown before the question as an earlier
    user turn (``image``: PNG bytes, empty = none; ``prompt``) and the assistant's reply (``answer``: the
    example's true answer as the prompt asks for it, e.g. ``"Choice: 1"``). ``id``: where it came from
    (``patient_id:orientation:slice_index``), for the records only (not in the cache key)."""

    id: str
    image: bytes = field(repr=False)
    prompt: str
    answer: str


@dataclass(frozen=True)
class VLMRequest:
    """One model call: an image (PNG bytes; empty = no image, a text-only request) and a prompt, the
    ``repeat``-th time. ``meta`` is opaque to
    backends (the engine puts the unit's key there); ``key`` is the cache key.

    ``codes``: the answer codes to score under log-prob scoring (``("0", "1", "2")``); ``prefix``: the
    text an answer starts with (``"Choice:"``), which a backend that writes the start of the model's
    turn itself puts there. Both come from the task; a backend knows no labels.

    ``shots``: labelled examples (:class:`Shot`) shown before the question as earlier chat turns, in
    order (empty: zero-shot, a single user turn).
    """

    key: str
    image: bytes
    prompt: str
    repeat: int
    meta: tuple = ()
    codes: tuple[str, ...] = ()
    prefix: str = ""
    shots: tuple[Shot, ...] = ()


@dataclass
class VLMResponse:
    """What came back, as the backend saw it (no labels):

    - ``raw``: the model's text, verbatim; ``prefill``: text the backend wrote before it (the request's
      ``prefix`` when the backend starts the model's turn itself, else ""), so the full answer is
      ``prefill + raw``;
    - ``code_probs``: log-prob scoring, ``{code: P(code)}`` (``exp`` of the log-prob, summed over a
      code's token variants; 0 for a code outside the returned top-k) and ``mass`` (their share of the
      next-token distribution);
    - ``finish_reason`` as the backend reported it; ``error`` set when the call failed after retries.

    ``choice`` (an answer code index or None) and ``probs`` (normalised over the codes) are filled by
    the engine from the task's parser (:func:`medvlm.vlm.records.interpret`), never by a backend.
    """

    raw: str | None = None
    prefill: str = ""
    code_probs: dict[str, float] | None = None
    mass: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    choice: int | None = None
    probs: tuple[float, ...] | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def image_sha(image: bytes) -> str:
    return hashlib.sha256(image).hexdigest()


#: what every request asked for before tasks named their answers: keys of such requests stay as they were
_V1_ANSWER = ("Choice:", ("0", "1", "2"))


def cache_key(*, backend: str, model: str, adapter: str | None, prompt: str, image: bytes,
              decoding: Decoding, repeat: int, prefix: str = _V1_ANSWER[0],
              codes: tuple[str, ...] = _V1_ANSWER[1], shots: tuple[Shot, ...] = ()) -> str:
    """SHA-256 over what changes the answer (never timeouts, retries, server URLs or concurrency).

    ``model``/``adapter`` are identities (a name, or a fingerprint of a local folder); ``image`` empty
    (no image: ``eval-vlm --image none``) keys as ``"none"``; ``prefix`` and
    ``codes`` (the answer prefix and the codes scored) enter the key only when they differ from what
    every request asked before tasks existed, so caches written then keep their keys. ``shots``
    (few-shot examples) enter the key only when there are some (each as its image hash, prompt and
    answer, in order), so zero-shot keys stay as they were.
    """
    payload: dict[str, Any] = {
        "v": 1, "backend": backend, "model": model, "adapter": adapter, "prompt": prompt,
        "image": image_sha(image) if image else "none", "decoding": decoding.model_dump(mode="json"),
        "repeat": int(repeat),
    }
    if (prefix, tuple(codes)) != _V1_ANSWER:
        payload["answer"] = {"prefix": prefix, "codes": list(codes)}
    if shots:
        payload["shots"] = [{"image": image_sha(s.image) if s.image else "none", "prompt": s.prompt,
                             "answer": s.answer} for s in shots]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def normalise_probs(*p: float) -> tuple[tuple[float, ...] | None, float]:
    """Raw probabilities of the answer codes -> (normalised tuple or None if all 0, their mass).

    >>> normalise_probs(1.0, 3.0, 0.0)
    ((0.25, 0.75, 0.0), 4.0)
    """
    mass = float(sum(p))
    if mass <= 0:
        return None, 0.0
    return tuple(x / mass for x in p), mass
