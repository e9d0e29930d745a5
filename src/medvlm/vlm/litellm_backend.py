"""The ``litellm`` backend: hosted models through LiteLLM (``--model PROVIDER/NAME [--base-url URL]``).

- Any provider LiteLLM supports (``openai/gpt-4o``, ``anthropic/claude-...``, ``gemini/...``,
  ``bedrock/...``, ``azure/...``, ``hosted_vllm/...``, ``ollama/...``); ``--base-url`` is its
  ``api_base`` (one at most). Keys come from the provider's usual environment variables, which LiteLLM
  reads itself; medvlm never passes, logs or writes them, and masks every provider key of the
  environment (:func:`medvlm.vlm._secrets.env_secrets`) in whatever comes back.
- Before any work: an unknown provider (``litellm.get_llm_provider`` raises) or a missing key
  (``litellm.validate_environment``) is a one-line :class:`ConfigError` (exit 2); so is ``--scoring
  logprobs`` or ``--structured`` for a provider LiteLLM gives no ``logprobs``/``top_logprobs`` or
  ``response_format`` for (``litellm.get_supported_openai_params``). A provider that takes no sampling
  seed gets none (said once on stderr and recorded in run.json's ``usage.notes``).
- The request is :func:`medvlm.vlm.chat_payload.build_payload`'s body, passed to
  ``litellm.completion`` (LiteLLM translates it for the provider), with LiteLLM's own retries off: the
  retry policy and request loop are medvlm's, shared with the ``openai`` backend
  (:class:`medvlm.vlm._retry.RetryingBackend`): ``litellm.Timeout``, connection errors,
  ``RateLimitError`` (429, ``Retry-After`` from the provider's response headers honoured) and 5xx
  (``InternalServerError``, ``ServiceUnavailableError``, ``BadGatewayError``, ...) are retried; any other
  status stops the run with the provider's message (:func:`medvlm.vlm._server_errors.explain_refusal`).
- The run's first request is a probe, sent alone; a provider that cannot be reached, refuses the model
  or returns no log-probs under ``--scoring logprobs`` stops the run there (exit 2).
- Each answer carries its token usage and cost (LiteLLM's packaged cost map; None where unknown) in
  ``response.extra["usage"]`` (:mod:`medvlm.vlm.usage`). LiteLLM loads its packaged cost map
  (``LITELLM_LOCAL_MODEL_COST_MAP=True``) and bundled catalogs (``LITELLM_OFFLINE_MODE=true``) unless
  those are set otherwise, so costs follow the installed version and only the provider is contacted.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from typing import Any

from medvlm.errors import ConfigError, require
from medvlm.vlm._retry import CONNECT_TIMEOUT_S, Fatal, Retry, RetryingBackend, retryable
from medvlm.vlm._secrets import Redactor, env_secrets, redact_url, url_secrets
from medvlm.vlm._server_errors import explain_refusal, server_message
from medvlm.vlm.backends import Backend, BackendConfig
from medvlm.vlm.chat_answer import ANSWER_SECRET_MIN, add_code_probs, is_json_object
from medvlm.vlm.chat_payload import build_payload
from medvlm.vlm.types import Decoding, VLMRequest, VLMResponse
from medvlm.vlm.usage import USAGE_KEY, call_usage

EXTRA = "api"
#: the request fields an option adds and the LiteLLM parameter a provider must support for it
_NEEDS = {
    "logprobs": ("--scoring logprobs", "log-probs", "use --scoring generate"),
    "top_logprobs": ("--scoring logprobs", "the top log-probs of each token", "use --scoring generate"),
    "response_format": ("--structured json", "a JSON schema (response_format)", "use --structured none"),
}
#: providers that speak the OpenAI-compatible protocol and pass vLLM's choice constraint on
CHOICE_PROVIDERS = ("openai", "hosted_vllm", "openai_like", "custom_openai")


def load_litellm() -> Any:
    """``import litellm`` quietly and offline (packaged cost map, no debug banners, no telemetry), or a
    one-line error naming the extra to install."""
    require("litellm", EXTRA)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # its packaged cost map
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")  # bundled catalogs: only the provider is contacted
    # pydantic's notes on LiteLLM's own types (raised as LiteLLM builds them lazily): not the user's business
    warnings.filterwarnings("ignore", message=r".*using the `ReadOnly` qualifier", category=UserWarning)
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    litellm.drop_params = False  # an unsupported field is an error, never dropped unseen
    return litellm


def provider_of(litellm: Any, model: str) -> tuple[str, str]:
    """``(provider, model name at the provider)`` of ``PROVIDER/NAME`` (ConfigError when LiteLLM knows
    no provider for it)."""
    try:
        name, provider, _, _ = litellm.get_llm_provider(model=model)
    except Exception:  # noqa: BLE001 - LiteLLM raises BadRequestError (and others) for an unknown provider
        raise ConfigError(f"--model {model!r}: LiteLLM knows no provider for it; write PROVIDER/NAME, e.g. "
                          "openai/gpt-4o, anthropic/claude-sonnet-4-5, gemini/gemini-2.5-flash, "
                          "hosted_vllm/NAME (https://docs.litellm.ai/docs/providers)") from None
    return str(provider), str(name)


def check_environment(litellm: Any, model: str, provider: str, api_base: str | None) -> None:
    """ConfigError naming the environment variables ``provider`` needs and that are not set."""
    found = litellm.validate_environment(model=model, api_base=api_base)
    missing = [str(k) for k in found.get("missing_keys") or []]
    if missing and not found.get("keys_in_environment"):
        raise ConfigError(f"--model {model}: the {provider} provider needs the environment variable"
                          f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} (not set); set "
                          f"{'them' if len(missing) > 1 else 'it'} in the environment, never in a file")


class LiteLLMBackend(RetryingBackend, Backend):
    """Chat completions through ``litellm.completion``; see the module docstring."""

    name = "litellm"
    reports_usage = True
    thread_name = "medvlm-litellm"

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        if config.adapter:
            raise ConfigError("--adapter is for the transformers backend; a hosted model takes none")
        if len(config.base_urls) > 1:
            raise ConfigError(f"--base-url: the litellm backend takes one (the provider's api_base); got "
                              f"{len(config.base_urls)}")
        self.api_base = config.base_urls[0].rstrip("/") if config.base_urls else None
        if self.api_base and not re.match(r"^https?://", self.api_base):
            raise ConfigError(f"--base-url {redact_url(self.api_base)!r}: expected http(s)://host[:port]/...")
        self.litellm = load_litellm()
        self.provider, self.provider_model = provider_of(self.litellm, config.model)
        check_environment(self.litellm, config.model, self.provider, self.api_base)
        self._redactor = Redactor([*env_secrets(), *(url_secrets(self.api_base) if self.api_base else [])])
        try:
            supported = self.litellm.get_supported_openai_params(model=self.provider_model,
                                                                 custom_llm_provider=self.provider)
        except Exception:  # noqa: BLE001 - unknown to LiteLLM's table: let the provider decide
            supported = None
        self.supported: set[str] | None = None if supported is None else set(supported)
        self.label = f"{self.provider} ({redact_url(self.api_base)})" if self.api_base else self.provider
        self.price_known = self._price_known()  # --max-cost needs a price (engine checks before any request)
        self.notes: list[str] = []
        self._start_loop()
        self.n_calls = 0  # litellm.completion calls (retries included)
        import httpx

        # a provider that cannot be reached fails the probe within seconds, however long an answer may take
        self._timeout = httpx.Timeout(config.timeout_s, connect=min(CONNECT_TIMEOUT_S, config.timeout_s))

    def _price_known(self) -> bool:
        """Whether LiteLLM's cost map prices this model's input tokens."""
        try:
            info = self.litellm.get_model_info(model=self.provider_model, custom_llm_provider=self.provider)
        except Exception:  # noqa: BLE001 - not mapped: no price
            return False
        return info.get("input_cost_per_token") is not None

    def model_identity(self) -> str:
        return self.config.model  # PROVIDER/NAME; the api_base is not part of the identity

    def check(self, decoding: Decoding) -> None:
        """ConfigError for an option the provider cannot honour through LiteLLM (before any request)."""
        needed = ["logprobs", "top_logprobs"] if decoding.scoring == "logprobs" else []
        needed += ["response_format"] if decoding.structured == "json" else []
        for param in needed:
            if self.supported is not None and param not in self.supported:
                option, what, advice = _NEEDS[param]
                raise ConfigError(f"{option}: LiteLLM gives no {what} for {self.config.model} (provider "
                                  f"{self.provider}); {advice}")
        if decoding.structured == "choice" and self.provider not in CHOICE_PROVIDERS:
            raise ConfigError(f"--structured choice: a vLLM constraint that provider {self.provider} does "
                              "not take; use --structured json or none")
        if decoding.seed is not None and self.supported is not None and "seed" not in self.supported:
            note = (f"provider {self.provider} takes no sampling seed: requests are sent without one "
                    "(answers at temperature > 0 will not reproduce)")
            if note not in self.notes:
                self.notes.append(note)
                print(f"medvlm: note: {note}", file=sys.stderr)

    # ------------------------------------------------------------------ one attempt (RetryingBackend)
    def _down(self) -> str:
        return self.label

    def _payload(self, request: VLMRequest, decoding: Decoding) -> dict[str, Any]:
        """``litellm.completion``'s keyword arguments."""
        body = build_payload(self.config.model, request, decoding)
        if "seed" in body and self.supported is not None and "seed" not in self.supported:
            del body["seed"]  # said once by check()
        body.update(model=self.config.model, timeout=self._timeout, num_retries=0, max_retries=0)
        if self.api_base:
            body["api_base"] = self.api_base
        return body

    def _classify(self, exc: Exception) -> tuple[str, int | None, str | None]:
        """``(kind, HTTP status, Retry-After)`` of an exception from ``litellm.completion``; kind is
        ``timeout``, ``connect``, ``status`` or ``other``."""
        import httpx
        import openai

        if isinstance(exc, self.litellm.Timeout):
            return "timeout", 408, None
        cur: BaseException | None = exc
        seen: set[int] = set()
        while cur is not None and id(cur) not in seen:
            seen.add(id(cur))
            unreachable = isinstance(cur, openai.APIConnectionError) and not isinstance(
                cur, openai.APITimeoutError)  # the openai SDK's timeout is a subclass: retried, not fatal
            if unreachable or isinstance(cur, (httpx.ConnectError, httpx.ConnectTimeout)):
                return "connect", None, None
            cur = cur.__cause__ or cur.__context__
        status = getattr(exc, "status_code", None)
        if not isinstance(status, int):
            return "other", None, None
        headers = getattr(exc, "litellm_response_headers", None)
        if not headers:
            headers = getattr(getattr(exc, "response", None), "headers", None)
        retry_after = None
        if headers is not None:
            try:
                retry_after = headers.get("retry-after")
            except (AttributeError, TypeError):
                retry_after = None
        return "status", status, retry_after

    def _message(self, exc: Exception) -> str:
        """The provider's words, without LiteLLM's class-name prefixes, one line, redacted."""
        text = re.sub(r"^(litellm\.\w+:\s*)?(\w+Error:\s*)?(\w+Exception\s*-\s*)?", "", str(exc).strip())
        return self._redact(server_message(text))

    def _send(self, payload: dict[str, Any], request: VLMRequest, decoding: Decoding, *, probe: bool,
              previous: Retry | None) -> VLMResponse | Retry:
        """One ``litellm.completion`` call; its exception classified (:meth:`_classify`)."""
        with self._lock:
            self.n_calls += 1
        try:
            result = self.litellm.completion(**payload)
        except Exception as exc:  # noqa: BLE001 - classified below; anything else stops the run
            kind, status, retry_after = self._classify(exc)
            message = self._message(exc)
            if kind == "connect":
                if probe:
                    raise Fatal(f"{self.label}: cannot reach the provider ({message}); check --base-url "
                                "and the network") from None
                return Retry(f"{self.label}: cannot connect ({message})", retry_after)
            if kind == "timeout":
                return Retry(f"{self.label}: no answer within {self.config.timeout_s:g} s", retry_after)
            if kind == "status" and retryable(status):  # type: ignore[arg-type]
                return Retry(f"{self.label}: HTTP {status}: {message[:200]}", retry_after)
            if kind == "status":
                raise Fatal(self._refusal(status, message, request)) from None  # type: ignore[arg-type]
            raise Fatal(f"{self.label} ({self.config.model}): {type(exc).__name__}: {message}") from None
        return self._read(result, decoding, request.codes, probe=probe)

    def _refusal(self, status: int, text: str, request: VLMRequest) -> str:
        """One line for a refused request (``text``: the provider's message, redacted)."""
        if status in (401, 403):
            return (f"{self.label} refused the request (HTTP {status}: {text}): check the {self.provider} "
                    "key in the environment")
        message = explain_refusal(self.label, status, text, model=self.config.model, served=None)
        if "refused the request" in message and request.meta:  # this request, not the run's
            message += f" (asked about {request.meta[0]})"
        return message

    def _read(self, result: Any, decoding: Decoding, codes: tuple[str, ...], *, probe: bool) -> VLMResponse:
        try:
            choice0 = result.choices[0]
            raw = choice0.message.content or ""
        except (AttributeError, IndexError, TypeError):
            return VLMResponse(error=f"{self.label}: unexpected response shape: "
                                     f"{self._redact(str(result))[:200]}")
        response = VLMResponse(raw=self._redact(str(raw), min_length=ANSWER_SECRET_MIN),
                               finish_reason=getattr(choice0, "finish_reason", None))
        response.extra[USAGE_KEY] = self._usage(result)
        if probe and decoding.structured == "json" and not is_json_object(raw):
            raise Fatal(f"{self.label} ignored --structured json (response_format): its answer is not a JSON "
                        f"object ({raw[:80]!r}); use --structured none")
        if decoding.scoring == "logprobs":
            logprobs = getattr(choice0, "logprobs", None)
            if hasattr(logprobs, "model_dump"):
                logprobs = logprobs.model_dump()
            content = logprobs.get("content") if isinstance(logprobs, dict) else None
            if not content:
                raise Fatal(f"{self.label} returned no logprobs for model {self.config.model!r}: the "
                            "provider does not support them; use --scoring generate")
            add_code_probs(response, content, codes)
        return response

    def _usage(self, result: Any) -> dict[str, Any]:
        """Tokens and cost of one answer (LiteLLM's cost map; None where unknown)."""
        usage = getattr(result, "usage", None)
        prompt, completion = (getattr(usage, k, None) for k in ("prompt_tokens", "completion_tokens"))
        hidden = getattr(result, "_hidden_params", None) or {}
        cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
        if cost is None and prompt:
            try:
                cost = self.litellm.completion_cost(completion_response=result, model=self.config.model)
            except Exception:  # noqa: BLE001 - a model without a price: cost unknown
                cost = None
        return call_usage(prompt, completion, cost)
