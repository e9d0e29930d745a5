"""The ``openai`` backend: any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, hosted).

- ``POST {base_url}/chat/completions`` with the image as a base64 PNG data URI (image first, then the
  prompt); the key comes from ``OPENAI_API_KEY`` and is sent only as the ``Authorization`` header (never
  logged, never written, never in an error message). Whatever a server sends back -- errors, refusals,
  answers -- is masked for the key, ``--base-url`` credentials and secret-named ``--extra-body`` values
  in every form a server may echo them (:mod:`medvlm.vlm._secrets`).
- ``concurrency`` requests in flight (threads over one ``httpx.Client``); several ``base_urls`` share the
  load (fewest in flight first); a server that fails 3 times in a row is rested (exponential cool-down)
  while others are available.
- Preflight: the run's first request that needs sending is a probe, sent alone before the rest fan out
  (no extra request; a fully cached rerun contacts no server). An unreachable server, a model it does not
  serve, or a request field it rejects raises :class:`BackendError` at once (exit 2), naming the server,
  what it said and what to use instead (:mod:`medvlm.vlm._server_errors`); every other ``--base-url`` is
  checked for reachability (``GET /models``). With ``structured="json"`` an answer that is not a JSON
  object means the server ignored ``response_format``: the run stops.
- Retries only connection errors, timeouts, 408, 429 (``Retry-After`` honoured) and 5xx, with exponential
  backoff and jitter, up to ``max_retries``; then the request is returned as a failure. Any other 4xx
  raises :class:`BackendError` on first sight with the server's message. When the first
  :data:`GIVE_UP_AFTER` requests of a run all failed, the rest are not sent (returned as failures: exit 1,
  rerun to retry).
- ``scoring="logprobs"``: asks for ``logprobs``/``top_logprobs`` and reads P(code) of each of the
  request's answer codes at the token that carries the answer (the first code token after a colon, or
  at the start); variants such as ``" 1"`` are summed; a code outside the top-k counts as 0. A server
  that returns no log-probs raises :class:`BackendError`.
- ``structured``: ``json`` -> ``response_format`` with a JSON schema (OpenAI, vLLM, Ollama, llama.cpp);
  ``choice`` -> vLLM's ``guided_choice`` with the request's codes (other servers ignore or reject it).
"""

from __future__ import annotations

import base64
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from medvlm.errors import BackendError, ConfigError
from medvlm.vlm._retry import GIVE_UP_AFTER, PROBE_ATTEMPTS, RETRY_STATUS, backoff_delay, fan_out
from medvlm.vlm._retry import Fatal as _Fatal
from medvlm.vlm._secrets import Redactor, body_secrets, redact_url, url_secrets
from medvlm.vlm._server_errors import explain_refusal, served_models
from medvlm.vlm.backends import Backend, BackendConfig, api_key
from medvlm.vlm.types import Decoding, VLMRequest, VLMResponse

DEFAULT_BASE_URL = "https://api.openai.com/v1"
FAILS_BEFORE_REST = 3
#: seconds to open a connection (an unreachable server fails the probe within seconds)
CONNECT_TIMEOUT_S = 5.0
#: secrets shorter than this are not masked inside answers (they would mask digits and words)
ANSWER_SECRET_MIN = 6



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


#: how servers take a choice constraint: vLLM before 0.10 (and SGLang) ``guided_choice``; vLLM 0.10 and
#: later ``structured_outputs: {"choice": [...]}``. The probe tries them in this order.
CHOICE_FIELDS = ("guided_choice", "structured_outputs")


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


_BEFORE_ANSWER = re.compile(r"(?:^|:)\s*[\"'(\[<]?\s*$")


def answer_probs(content: list[dict[str, Any]], codes: tuple[str, ...]) -> dict[str, float] | None:
    """P(code) of each answer code from chat-completions ``logprobs.content``.

    Finds the first token that is a bare code (spaces allowed) with nothing but markup before it or
    right after a colon (``Choice: 1``, ``{"choice": 1``); sums ``exp(logprob)`` of the top-k entries
    per code (a code outside the top-k: 0). Returns None when no answer token is found.

    >>> content = [{"token": "Choice", "logprob": 0.0, "top_logprobs": []},
    ...            {"token": ":", "logprob": 0.0, "top_logprobs": []},
    ...            {"token": " 1", "logprob": -0.2, "top_logprobs": [
    ...                {"token": " 1", "logprob": math.log(0.6)}, {"token": "1", "logprob": math.log(0.1)},
    ...                {"token": " 0", "logprob": math.log(0.2)},
    ...                {"token": " The", "logprob": math.log(0.1)}]}]
    >>> {c: round(p, 4) for c, p in answer_probs(content, ("0", "1", "2")).items()}
    {'0': 0.2, '1': 0.7, '2': 0.0}
    """
    text = ""
    for entry in content:
        token = str(entry.get("token", ""))
        if token.strip() in codes:
            before = re.sub(r"[*_`#]", "", text)
            if _BEFORE_ANSWER.search(before):
                p = dict.fromkeys(codes, 0.0)
                tops = entry.get("top_logprobs") or [{"token": token, "logprob": entry.get("logprob")}]
                seen = set()
                for top in tops:
                    t = str(top.get("token", ""))
                    if t.strip() in p and t not in seen and top.get("logprob") is not None:
                        seen.add(t)
                        p[t.strip()] += math.exp(float(top["logprob"]))
                return p
        text += token
    return None


def _is_json_object(text: str) -> bool:
    """Whether ``text`` (stripped, code fences removed) parses as a JSON object."""
    import json

    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


class ServerPool:
    """Spreads requests over servers: fewest in flight first; one that keeps failing rests a while."""

    def __init__(self, urls: list[str], *, rest_s: float = 5.0) -> None:
        self.urls = urls
        self.rest_s = rest_s
        self._lock = threading.Lock()
        self.in_flight = dict.fromkeys(urls, 0)
        self.fails = dict.fromkeys(urls, 0)
        self.rest_until = dict.fromkeys(urls, 0.0)
        self.sent = dict.fromkeys(urls, 0)
        self._turn = 0

    def acquire(self, avoid: str | None = None, only: str | None = None) -> str:
        """A server to send to (``only``: that one, counted like any other)."""
        with self._lock:
            if only is not None:
                self.in_flight[only] += 1
                self.sent[only] += 1
                return only
            now = time.monotonic()
            ready = [u for u in self.urls if self.rest_until[u] <= now]
            if avoid is not None and len(ready) > 1:
                ready = [u for u in ready if u != avoid] or ready
            if not ready:  # all resting: the one that wakes first
                ready = [min(self.urls, key=lambda u: self.rest_until[u])]
            self._turn += 1
            order = {u: (i - self._turn) % len(self.urls) for i, u in enumerate(self.urls)}
            url = min(ready, key=lambda u: (self.in_flight[u], self.fails[u], order[u]))
            self.in_flight[url] += 1
            self.sent[url] += 1
            return url

    def release(self, url: str, ok: bool) -> None:
        with self._lock:
            self.in_flight[url] -= 1
            if ok:
                self.fails[url] = 0
                self.rest_until[url] = 0.0
            else:
                self.fails[url] += 1
                if self.fails[url] >= FAILS_BEFORE_REST:
                    wait = min(60.0, self.rest_s * 2 ** (self.fails[url] - FAILS_BEFORE_REST))
                    self.rest_until[url] = time.monotonic() + wait


class OpenAIBackend(Backend):
    """Chat completions over HTTP; see the module docstring."""

    name = "openai"

    def __init__(self, config: BackendConfig) -> None:
        import httpx

        super().__init__(config)
        if config.adapter:
            raise ConfigError("--adapter is for the transformers backend; serve the adapter with the server")
        urls = [u.rstrip("/") for u in (config.base_urls or [DEFAULT_BASE_URL])]
        for u in urls:
            if not re.match(r"^https?://", u):
                raise ConfigError(f"--base-url {redact_url(u)!r}: expected http(s)://host[:port]/v1")
        self.pool = ServerPool(urls, rest_s=max(config.backoff_s, 0.05) * 5)
        headers = {"Content-Type": "application/json"}
        key = api_key()
        self._redactor = Redactor([key or "", *(s for u in urls for s in url_secrets(u))])
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=config.concurrency + 2,
                              max_keepalive_connections=config.concurrency)
        timeout = httpx.Timeout(config.timeout_s, connect=min(CONNECT_TIMEOUT_S, config.timeout_s))
        self.client = httpx.Client(headers=headers, timeout=timeout, limits=limits)
        self.n_http = 0  # HTTP requests sent (retries included)
        self._lock = threading.Lock()
        self._probed = False
        self.choice_field = CHOICE_FIELDS[0]  # the probe switches to the form a server takes
        self.n_answered = 0  # requests answered (HTTP 200) in this backend's life
        self.n_failed_in_a_row = 0  # requests failed since the last answer

    def model_identity(self) -> str:
        return self.config.model  # a served model name; the server URL is not part of the identity

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ one request, with retries
    def _delay(self, attempt: int, retry_after: str | None) -> float:
        return backoff_delay(attempt, retry_after, backoff_s=self.config.backoff_s,
                             max_backoff_s=self.config.max_backoff_s)

    def _redact(self, text: str, *, min_length: int = 1) -> str:
        """``text`` with every secret masked (a server may echo what it was sent); see
        :mod:`medvlm.vlm._secrets`."""
        return self._redactor(text, min_length=min_length)

    def _fatal(self, url: str, status: int, text: str) -> _Fatal:
        return _Fatal(explain_refusal(url, status, text, model=self.config.model,
                                      served=served_models(self.client, url)))

    def _one(self, request: VLMRequest, decoding: Decoding, *, probe: bool = False) -> VLMResponse:
        """One request with retries. ``probe``: the run's first request; a server that cannot be reached
        stops the run at once instead of being retried."""
        with self._lock:
            if self.n_failed_in_a_row >= GIVE_UP_AFTER:
                return VLMResponse(error=f"not sent: the last {GIVE_UP_AFTER} requests all failed, the "
                                         "server seems down (see failures.csv); rerun to retry")
        body = build_payload(self.config.model, request, decoding, choice_field=self.choice_field)
        response = self._attempts(body, request, decoding, probe=probe)
        if response.error:
            response.error = self._redact(response.error)
        with self._lock:
            if response.failed:
                self.n_failed_in_a_row += 1
            else:
                self.n_answered += 1
                self.n_failed_in_a_row = 0
        return response

    def _attempts(self, body: dict[str, Any], request: VLMRequest, decoding: Decoding, *, probe: bool
                  ) -> VLMResponse:
        import httpx

        last_error = "no attempt"
        url = None
        attempts = min(PROBE_ATTEMPTS, self.config.max_retries + 1) if probe else self.config.max_retries + 1
        for attempt in range(attempts):
            url = self.pool.acquire(avoid=url if attempt else None, only=self.pool.urls[0] if probe else None)
            ok = False
            retry_after = None
            try:
                with self._lock:
                    self.n_http += 1
                resp = self.client.post(f"{url}/chat/completions", json=body)
                status = resp.status_code
                if status == 200:
                    try:
                        data = resp.json()
                        ok = True
                    except ValueError:
                        ok = False
                        last_error = f"{url}: HTTP 200 with a body that is not JSON"
                    else:
                        return self._read(data, decoding, url, request.codes, probe=probe)
                else:
                    text = self._redact(resp.text)[:2000]  # masked before it is cut
                    last_error = f"{url}: HTTP {status}: {text[:200]}".replace("\n", " ")
                    if status not in RETRY_STATUS and status < 500:
                        ok = True  # the server is up; it refuses what every request of this run asks
                        fatal = self._fatal(url, status, text).args[0]
                        if "refused the request" in fatal and request.meta:  # this request, not the run's
                            fatal += f" (asked about {request.meta[0]})"
                        raise _Fatal(fatal)
                retry_after = resp.headers.get("retry-after")
            except httpx.ConnectError as exc:
                last_error = f"{url}: cannot connect ({exc})"
                if probe:
                    raise _Fatal(f"{url}: cannot reach the server ({exc}); check --base-url and that the "
                                 "server is running") from None
            except httpx.ConnectTimeout:
                last_error = f"{url}: no connection within {CONNECT_TIMEOUT_S:g} s"
                if probe:
                    raise _Fatal(f"{url}: no connection within {CONNECT_TIMEOUT_S:g} s; check --base-url and "
                                 "that the server is running") from None
            except httpx.TimeoutException:
                last_error = f"{url}: no answer within {self.config.timeout_s:g} s"
            except httpx.TransportError as exc:
                last_error = f"{url}: {type(exc).__name__}: {exc}"
            finally:
                self.pool.release(url, ok)
            if attempt < attempts - 1:
                time.sleep(self._delay(attempt, retry_after))
        if probe:  # the run's first request never got an answer: stop before sending the rest
            served = served_models(self.client, url) if url else None
            hint = (f"; it does not list model {self.config.model!r} (it lists: {', '.join(served)})"
                    if served is not None and self.config.model not in served else "")
            raise _Fatal(f"the first request got no answer in {attempts} attempts (last: {last_error}){hint}")
        return VLMResponse(error=f"failed after {attempts} attempts; last: {last_error}")

    def _read(self, data: dict[str, Any], decoding: Decoding, url: str, codes: tuple[str, ...], *,
              probe: bool = False) -> VLMResponse:
        try:
            choice0 = data["choices"][0]
            raw = choice0["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            return VLMResponse(error=f"{url}: unexpected response shape: {self._redact(str(data))[:200]}")
        # an answer that echoes a secret keeps its text, the secret masked (short ones would mask digits)
        response = VLMResponse(raw=self._redact(str(raw), min_length=ANSWER_SECRET_MIN),
                               finish_reason=choice0.get("finish_reason"))
        if probe and decoding.structured == "json" and not _is_json_object(raw):
            raise _Fatal(f"{url} ignored --structured json (response_format): its answer is not a JSON "
                         f"object ({raw[:80]!r}); use --structured none, or a server that supports it")
        if decoding.scoring == "logprobs":
            logprobs = choice0.get("logprobs") or {}
            content = logprobs.get("content") if isinstance(logprobs, dict) else None
            if not content:
                raise _Fatal(f"{url} returned no logprobs for model {self.config.model!r}: the server "
                             "does not "
                             "support them; use --scoring generate")
            code_probs = answer_probs(content, codes)
            if code_probs is not None:
                response.code_probs, response.mass = code_probs, float(sum(code_probs.values()))
        return response

    # ------------------------------------------------------------------ many requests
    def _preflight(self, first: VLMRequest, decoding: Decoding) -> VLMResponse:
        """Check every server answers at all (``GET /models``), then send ``first`` alone to the first
        server (the probe)."""
        for url in self.pool.urls:
            try:
                self.client.get(f"{url}/models", timeout=CONNECT_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - any transport failure: unreachable
                message = (f"{url}: cannot reach the server ({type(exc).__name__}: {exc}); check --base-url "
                           "and that the server is running")
                raise BackendError(self._redact(message)) from None
        refusals = []
        for field in CHOICE_FIELDS if decoding.structured == "choice" else (self.choice_field,):
            self.choice_field = field
            try:
                return self._one(first, decoding, probe=True)
            except _Fatal as exc:
                if decoding.structured != "choice" or field not in str(exc):
                    raise BackendError(self._redact(str(exc))) from None
                refusals.append(str(exc))  # this server takes the choice constraint in another form
        raise BackendError(self._redact(refusals[-1] + f" (tried {', '.join(CHOICE_FIELDS)})"))

    def answer(self, requests: Iterable[VLMRequest], decoding: Decoding
               ) -> Iterator[tuple[VLMRequest, VLMResponse]]:
        self._redactor.add(body_secrets(decoding.extra_body))  # secret-named --extra-body fields
        it = iter(requests)
        if not self._probed:
            first = next(it, None)
            if first is None:
                return
            self._probed = True
            yield first, self._preflight(first, decoding)
        yield from fan_out(lambda req: self._one(req, decoding), it, concurrency=self.config.concurrency,
                           redact=self._redact)
