"""What an OpenAI-compatible server's refusal means, in one line a user can act on.

Used by the ``openai`` backend (:mod:`medvlm.vlm.openai_compat`): its first real request is a probe,
sent alone before the rest fan out, and any 4xx other than 408/429 (at any time) stops the run with
:func:`explain_refusal`. Shapes seen from real servers:

- vLLM, model not served: HTTP 404 ``{"object": "error", "message": "The model `x` does not exist.",
  "type": "NotFoundError", ...}`` (newer versions nest it under ``"error"``);
- ``transformers serve`` pinned to another model: HTTP 400 ``{"detail": "Server is pinned to 'a';
  requested 'b'."}``; a request field it does not know: HTTP 422 ``{"detail": "Unexpected fields in the
  request: {'guided_choice'}"}``;
- Ollama, model not pulled: HTTP 404 ``{"error": {"message": "model \\"x\\" not found, try pulling it
  first", ...}}``.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: request fields an option adds, and what to use instead when a server refuses them
FIELD_ADVICE = {
    "guided_choice": "--structured choice is not supported by this server: use --structured none (or json)",
    "structured_outputs": "--structured choice is not supported by this server: use --structured none "
                          "(or json)",
    "response_format": "--structured json is not supported by this server: use --structured none",
    "json_schema": "--structured json is not supported by this server: use --structured none",
    "logprobs": "log-probs are not supported by this server: use --scoring generate",
    "top_logprobs": "log-probs are not supported by this server: use --scoring generate",
    "seed": "this server refuses a sampling seed (in EXPERIMENT.yaml: seed: null leaves it out)",
}
_MODEL_WORDS = re.compile(r"model|pinned|not found|does not exist|no such", re.IGNORECASE)


def server_message(text: str) -> str:
    """The human part of an error body (``detail``, ``message`` or ``error.message``), one line, 300
    characters at most.

    >>> server_message('{"detail": "Unexpected fields in the request: {\\'guided_choice\\'}"}')
    "Unexpected fields in the request: {'guided_choice'}"
    >>> server_message('{"error": {"message": "model \\\\"x\\\\" not found"}}')
    'model "x" not found'
    """
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = None
    found = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            found = err.get("message")
        elif isinstance(err, str):
            found = err
        found = found or data.get("detail") or data.get("message")
    message = str(found if found is not None else text)
    return " ".join(message.split())[:300]


def explain_refusal(url: str, status: int, text: str, *, model: str, served: list[str] | None) -> str:
    """One line for a refused request: which server, what it said, and what to do instead.

    ``served``: the model names ``/v1/models`` lists (None when it could not be read).

    >>> body = '{"detail": "Server is pinned to a; requested b."}'
    >>> explain_refusal("http://h/v1", 400, body, model="b", served=["a"])
    "http://h/v1 does not serve model 'b' (HTTP 400: Server is pinned to a; requested b.); it lists: a;
    check --model and --base-url"
    """
    message = server_message(text)
    names = f"; it lists: {', '.join(served)}" if served else ""
    if status in (401, 403):
        return f"{url} refused the request (HTTP {status}: {message}): check OPENAI_API_KEY"
    for field, advice in FIELD_ADVICE.items():
        if field in message:
            return f"{url} rejects the request field {field!r} (HTTP {status}: {message}): {advice}"
    if status == 404 and served is not None and model in served:
        return (f"{url}/chat/completions: HTTP 404 ({message}) although the server lists model {model!r}: "
                "check --base-url (OpenAI-compatible servers answer under .../v1)")
    model_named = model in message or (served is not None and model not in served)
    if status == 404 or (model_named and _MODEL_WORDS.search(message)):
        return (f"{url} does not serve model {model!r} (HTTP {status}: {message}){names}; check --model and "
                "--base-url")
    hint = "; check --extra-body" if status == 422 else ""
    return f"{url} refused the request (HTTP {status}: {message}); it is not retried{hint}"


def served_models(client: Any, url: str) -> list[str] | None:
    """Model ids from ``GET {url}/models`` (None when the server does not answer it readably)."""
    try:
        resp = client.get(f"{url}/models", timeout=5.0)
        data = resp.json() if resp.status_code == 200 else None
    except Exception:  # noqa: BLE001 - only names for a message; any failure means "unknown"
        return None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    return [str(m.get("id")) for m in items if isinstance(m, dict) and m.get("id")]
