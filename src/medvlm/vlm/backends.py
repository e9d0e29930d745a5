"""The backend interface and registry: ``transformers``, ``openai`` (any OpenAI-compatible server),
``litellm`` (hosted models through LiteLLM) and ``mock`` (scripted, for tests and dry runs).

A backend answers :class:`~medvlm.vlm.types.VLMRequest` objects and yields
``(request, VLMResponse)`` pairs *as they complete* (so the engine can commit each to the cache at
once). A request that fails after the backend's retries comes back with ``response.error`` set; a
problem that dooms every request (bad key, unknown model, no log-probs) raises
:class:`~medvlm.errors.BackendError` instead.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medvlm.registry import Registry
from medvlm.vlm.types import Decoding, VLMRequest, VLMResponse


class BackendConfig(BaseModel):
    """How to reach a model (nothing here changes an answer except ``model`` and ``adapter``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: one line, exit 2

    backend: str = "transformers"
    model: str
    adapter: str | None = None
    base_urls: list[str] = Field(default_factory=list)
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = Field(8, ge=1)
    concurrency: int = Field(4, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    max_backoff_s: float = Field(60.0, ge=0)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(DEVICE_PATTERN, value):
            raise ValueError(f"must be one of {', '.join(DEVICES)}; got {value!r}")
        return value

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"must be one of {', '.join(DTYPES)}; got {value!r}")
        return value


#: what ``device`` may be (the transformers backend; checked for every backend, so a typo never waits)
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:[0-9]+)?"
#: what ``dtype`` may be (``auto``: bfloat16 on CUDA, float32 elsewhere)
DTYPES = ("auto", "float32", "bfloat16", "float16")


class Backend:
    """Base class: subclasses set ``name`` and implement :meth:`answer`.

    ``prefills_answer``: whether the backend writes the request's ``prefix`` at the start of the
    model's turn itself (its ``raw`` is then the continuation after it). ``reports_usage``: whether its
    responses carry token usage and cost (:mod:`medvlm.vlm.usage`; ``--max-cost`` needs it).
    """

    name = "base"
    prefills_answer = False
    reports_usage = False

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    def model_identity(self) -> str:
        """What identifies the model in the cache key (a local folder: name + content fingerprint)."""
        return fingerprint(self.config.model)

    def adapter_identity(self) -> str | None:
        return None if self.config.adapter is None else fingerprint(self.config.adapter)

    def check(self, decoding: Decoding) -> None:
        """Raise :class:`ConfigError` for settings this backend cannot honour."""

    def answer(self, requests: Iterable[VLMRequest], decoding: Decoding
               ) -> Iterator[tuple[VLMRequest, VLMResponse]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections / memory."""


def fingerprint(name_or_path: str) -> str:
    """A model or adapter identity: the string itself, plus for a local folder a hash of its config
    files and the size and first/last MiB of each weight file (retraining into the same folder gives a
    new identity, so the cache never serves another model's answers)."""
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return name_or_path
    digest = hashlib.sha256()
    f = path
    try:
        for f in sorted(path.iterdir()):
            if not f.is_file():
                continue
            if f.suffix in (".json", ".jinja", ".txt", ".model"):
                digest.update(f.name.encode() + f.read_bytes())
            elif f.suffix in (".safetensors", ".bin", ".pt", ".gguf"):
                size = f.stat().st_size
                with open(f, "rb") as fh:
                    head = fh.read(1 << 20)
                    fh.seek(max(0, size - (1 << 20)))
                    tail = fh.read(1 << 20)
                digest.update(f.name.encode() + str(size).encode() + head + tail)
    except OSError as exc:
        from medvlm.errors import BackendError

        raise BackendError(f"{f}: cannot read it ({exc.strerror or exc})") from None
    return f"{path.resolve()}#{digest.hexdigest()[:16]}"


class MockBackend(Backend):
    """A scripted backend: answers from the image bytes alone, no model, no network.

    ``--model`` picks the script: ``hash`` (default; the answer is the code at the image hash modulo
    the number of codes, written as ``"<prefix> N Reasoning: mock"``), ``always:N`` (always N),
    ``text:...`` (always that raw text, to exercise the parser), ``fail`` (every request fails). With
    ``--scoring logprobs`` the code probabilities come from the image hash too. Its own default
    temperature (``None``) samples: the answer then varies with the repeat index, as at any
    temperature above 0.
    """

    name = "mock"

    def answer(self, requests, decoding):
        script = self.config.model
        for req in requests:
            sampled = decoding.temperature is None or decoding.temperature > 0  # its own default samples
            salt = str(req.repeat if sampled else 0).encode()
            h = hashlib.sha256(req.image + salt).digest()
            if script == "fail":
                yield req, VLMResponse(error="mock failure")
                continue
            codes = req.codes or ("0",)
            if script.startswith("always:"):
                raw = f"{req.prefix} {script.split(':', 1)[1]} Reasoning: mock".lstrip()
            elif script.startswith("text:"):
                raw = script.split(":", 1)[1]
            else:
                raw = f"{req.prefix} {codes[h[0] % len(codes)]} Reasoning: mock".lstrip()
            response = VLMResponse(raw=raw, finish_reason="stop")
            if decoding.scoring == "logprobs":
                response.code_probs = {c: h[1 + i] + 1.0 for i, c in enumerate(codes)}
                response.mass = 0.9
            yield req, response


BACKENDS = Registry("backend")
BACKENDS.register("transformers", "medvlm.vlm.hf:TransformersBackend")
BACKENDS.register("openai", "medvlm.vlm.openai_compat:OpenAIBackend")
BACKENDS.register("litellm", "medvlm.vlm.litellm_backend:LiteLLMBackend")
BACKENDS.register("mock", MockBackend)


def make_backend(config: BackendConfig) -> Backend:
    """Instantiate the backend ``config.backend`` (ConfigError with a suggestion for an unknown name)."""
    return BACKENDS.get(config.backend)(config)


def api_key() -> str | None:
    """The OpenAI-compatible API key from ``OPENAI_API_KEY`` (never logged, never written).

    It travels as an HTTP header, so it must be printable ASCII: a key with another character (an
    accented letter, a line break, a tab) is a one-line ConfigError that names the position, never the
    key or the character, before any request is sent.
    """
    key = os.environ.get("OPENAI_API_KEY") or None
    if key is not None:
        bad = next((i for i, c in enumerate(key) if not " " <= c <= "~"), None)
        if bad is not None:
            from medvlm.errors import ConfigError

            kind = "a non-ASCII" if ord(key[bad]) > 127 else "a control"
            raise ConfigError(f"OPENAI_API_KEY: {kind} character at position {bad + 1} of {len(key)}; an "
                              "HTTP header carries printable ASCII only: set it to the key as issued")
    return key

