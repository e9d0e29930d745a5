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

The request body is :mod:`medvlm.vlm.chat_payload`'s, the answer is read by :mod:`medvlm.vlm.chat_answer`,
several servers are :mod:`medvlm.vlm.server_pool`'s and the request loop (probe, retries, fan-out) is
:class:`medvlm.vlm._retry.RetryingBackend`; their public names are importable from here too.
"""

from __future__ import annotations

import re
from typing import Any

from medvlm.errors import BackendError, ConfigError
from medvlm.vlm._retry import CONNECT_TIMEOUT_S, RETRY_STATUS, Fatal, Retry, RetryingBackend
from medvlm.vlm._secrets import Redactor, redact_url, url_secrets
from medvlm.vlm._server_errors import explain_refusal, served_models
from medvlm.vlm.backends import Backend, BackendConfig, api_key
from medvlm.vlm.chat_answer import ANSWER_SECRET_MIN, add_code_probs, answer_probs, is_json_object
from medvlm.vlm.chat_payload import CHOICE_FIELDS, build_payload, data_uri, json_schema
from medvlm.vlm.server_pool import FAILS_BEFORE_REST, ServerPool
from medvlm.vlm.types import Decoding, VLMRequest, VLMResponse

__all__ = ["ANSWER_SECRET_MIN", "CHOICE_FIELDS", "CONNECT_TIMEOUT_S", "DEFAULT_BASE_URL", "FAILS_BEFORE_REST",
           "OpenAIBackend", "ServerPool", "answer_probs", "build_payload", "data_uri", "json_schema"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIBackend(RetryingBackend, Backend):
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
        self._start_loop()
        self.choice_field = CHOICE_FIELDS[0]  # the probe switches to the form a server takes

    def model_identity(self) -> str:
        return self.config.model  # a served model name; the server URL is not part of the identity

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ one attempt (RetryingBackend)
    def _fatal(self, url: str, status: int, text: str) -> Fatal:
        return Fatal(explain_refusal(url, status, text, model=self.config.model,
                                     served=served_models(self.client, url)))

    def _payload(self, request: VLMRequest, decoding: Decoding) -> dict[str, Any]:
        return build_payload(self.config.model, request, decoding, choice_field=self.choice_field)

    def _send(self, payload: dict[str, Any], request: VLMRequest, decoding: Decoding, *, probe: bool,
              previous: Retry | None) -> VLMResponse | Retry:
        """One POST to one server (the probe: always the first; a retry: another one when it can)."""
        import httpx

        url = self.pool.acquire(avoid=previous.server if previous else None,
                                only=self.pool.urls[0] if probe else None)
        ok = False
        retry_after = None
        try:
            with self._lock:
                self.n_http += 1
            resp = self.client.post(f"{url}/chat/completions", json=payload)
            status = resp.status_code
            if status == 200:
                try:
                    data = resp.json()
                    ok = True
                except ValueError:
                    ok = False
                    error = f"{url}: HTTP 200 with a body that is not JSON"
                else:
                    return self._read(data, decoding, url, request.codes, probe=probe)
            else:
                text = self._redact(resp.text)[:2000]  # masked before it is cut
                error = f"{url}: HTTP {status}: {text[:200]}".replace("\n", " ")
                if status not in RETRY_STATUS and status < 500:
                    ok = True  # the server is up; it refuses what every request of this run asks
                    fatal = self._fatal(url, status, text).args[0]
                    if "refused the request" in fatal and request.meta:  # this request, not the run's
                        fatal += f" (asked about {request.meta[0]})"
                    raise Fatal(fatal)
            retry_after = resp.headers.get("retry-after")
        except httpx.ConnectError as exc:
            error = f"{url}: cannot connect ({exc})"
            if probe:
                raise Fatal(f"{url}: cannot reach the server ({exc}); check --base-url and that the "
                            "server is running") from None
        except httpx.ConnectTimeout:
            error = f"{url}: no connection within {CONNECT_TIMEOUT_S:g} s"
            if probe:
                raise Fatal(f"{url}: no connection within {CONNECT_TIMEOUT_S:g} s; check --base-url and "
                            "that the server is running") from None
        except httpx.TimeoutException:
            error = f"{url}: no answer within {self.config.timeout_s:g} s"
        except httpx.TransportError as exc:
            error = f"{url}: {type(exc).__name__}: {exc}"
        finally:
            self.pool.release(url, ok)
        return Retry(error, retry_after, server=url)

    def _probe_hint(self) -> str:
        """Whether the probe's server lists the model at all (``GET /models``)."""
        served = served_models(self.client, self.pool.urls[0])
        return (f"; it does not list model {self.config.model!r} (it lists: {', '.join(served)})"
                if served is not None and self.config.model not in served else "")

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
        if probe and decoding.structured == "json" and not is_json_object(raw):
            raise Fatal(f"{url} ignored --structured json (response_format): its answer is not a JSON "
                        f"object ({raw[:80]!r}); use --structured none, or a server that supports it")
        if decoding.scoring == "logprobs":
            logprobs = choice0.get("logprobs") or {}
            content = logprobs.get("content") if isinstance(logprobs, dict) else None
            if not content:
                raise Fatal(f"{url} returned no logprobs for model {self.config.model!r}: the server "
                            "does not "
                            "support them; use --scoring generate")
            add_code_probs(response, content, codes)
        return response

    # ------------------------------------------------------------------ the probe
    def _probe(self, first: VLMRequest, decoding: Decoding) -> VLMResponse:
        """Check every server answers at all (``GET /models``), then send ``first`` alone to the first
        server (the probe); under ``--structured choice`` each form of the constraint
        (:data:`CHOICE_FIELDS`) until the server takes one."""
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
            except Fatal as exc:
                if decoding.structured != "choice" or field not in str(exc):
                    raise BackendError(self._redact(str(exc))) from None
                refusals.append(str(exc))  # this server takes the choice constraint in another form
        raise BackendError(self._redact(refusals[-1] + f" (tried {', '.join(CHOICE_FIELDS)})"))
