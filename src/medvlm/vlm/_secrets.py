"""Secrets never reach a file or the terminal: what counts as one, and how it is masked.

Secrets are the ``OPENAI_API_KEY`` (sent only as the ``Authorization`` header), the password and the
secret-named query values of a ``--base-url`` (``http://user:PASSWORD@host/v1?api_key=...``), and the
values of secret-named ``--extra-body`` fields (``api_key``, ``token``, ``password``, ...; sent in every
request, as asked). Records (run.json, experiment.json, sweep.json, the report) hold them masked as
``***`` (:func:`redact_record`); anything a server sends back -- error bodies, refusals, answers -- goes
through a :class:`Redactor` that masks every form a server may echo a secret in (verbatim, JSON-escaped,
percent-encoded or decoded).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

#: a field or query parameter whose value is a secret
SECRET_NAME = re.compile(r"key|token|secret|passw|auth|credential|bearer|cookie|session|signature",
                         re.IGNORECASE)
MASK = "***"


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part and secret-named query values masked.

    >>> redact_url("http://me:s3cret@host:8000/v1"), redact_url("http://host/v1")
    ('http://me:***@host:8000/v1', 'http://host/v1')
    >>> redact_url("https://host/v1?api_key=abc&x=1"), redact_url("me:pw@host:8000/v1")
    ('https://host/v1?api_key=***&x=1', 'me:***@host:8000/v1')
    """
    span = _password_span(url)
    if span is not None:
        url = url[:span[0]] + MASK + url[span[1]:]

    def query(match: re.Match[str]) -> str:
        name = match.group(2)
        return f"{match.group(1)}{name}={MASK}" if SECRET_NAME.search(name) else match.group(0)

    return re.sub(r"([?&;])([^=&;#]+)=([^&;#]*)", query, url)


def _password_span(url: str) -> tuple[int, int] | None:
    """Where the password of ``url``'s ``user:password@`` part is (the authority: after the first
    ``//``, else from the start, up to the next ``/``; a scheme typed wrong still counts)."""
    start = url.find("//")
    start = 0 if start < 0 else start + 2
    end = url.find("/", start)
    authority = url[start:len(url) if end < 0 else end]
    at = authority.rfind("@")
    colon = authority.find(":", 0, max(at, 0))
    if at < 0 or colon < 0:
        return None
    return start + colon + 1, start + at


def url_secrets(url: str) -> list[str]:
    """The password and secret-named query values of ``url`` (as written and percent-decoded)."""
    try:
        parts = urlsplit(url)
        values = [parts.password or "", *(v for k, v in parse_qsl(parts.query) if SECRET_NAME.search(k))]
    except ValueError:
        values = []
    span = _password_span(url)
    if span is not None:
        values.append(url[span[0]:span[1]])
    return [s for v in values for s in (v, unquote(v)) if s]


def body_secrets(body: Any) -> list[str]:
    """The values (strings and numbers) under secret-named keys of a JSON-like ``body``, at any depth."""
    found: list[str] = []
    if isinstance(body, dict):
        for key, value in body.items():
            if SECRET_NAME.search(str(key)):
                found += [str(v) for v in _leaves(value)]
            else:
                found += body_secrets(value)
    elif isinstance(body, list):
        for value in body:
            found += body_secrets(value)
    return found


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [] if value is None or isinstance(value, bool) else [value]


def mask_body(body: Any) -> Any:
    """A copy of ``body`` with the values under secret-named keys replaced by ``***``.

    >>> mask_body({"api_key": "abc", "top_k": 40, "auth": {"token": "x"}})
    {'api_key': '***', 'top_k': 40, 'auth': '***'}
    """
    if isinstance(body, dict):
        return {k: MASK if SECRET_NAME.search(str(k)) and v is not None else mask_body(v)
                for k, v in body.items()}
    if isinstance(body, list):
        return [mask_body(v) for v in body]
    return body


def redact_record(data: Any) -> Any:
    """A JSON-like config record with credentials masked, at any depth: ``base_urls`` / ``base_url``
    through :func:`redact_url`, ``extra_body`` through :func:`mask_body`.

    >>> redact_record({"vlm": [{"base_urls": ["http://u:p@h/v1"], "extra_body": {"api_key": "k"}}]})
    {'vlm': [{'base_urls': ['http://u:***@h/v1'], 'extra_body': {'api_key': '***'}}]}
    """
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if key in ("base_urls", "base_url") and isinstance(value, list):
                out[key] = [redact_url(v) if isinstance(v, str) else v for v in value]
            elif key in ("base_urls", "base_url") and isinstance(value, str):
                out[key] = redact_url(value)
            elif key == "extra_body":
                out[key] = mask_body(value)
            else:
                out[key] = redact_record(value)
        return out
    if isinstance(data, list):
        return [redact_record(v) for v in data]
    return data


class Redactor:
    """Masks ``secrets`` in text, in every form a server may echo them: verbatim, JSON-escaped (``\\/``,
    ``\\u..``), percent-encoded. Longer secrets first, so one inside another leaves no tail.

    >>> Redactor(["s/3"])("got s/3, s\\\\/3 and s%2F3")
    'got ***, *** and ***'
    """

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()) -> None:
        self.forms: list[str] = []
        self.add(secrets)

    def add(self, secrets: list[str] | tuple[str, ...]) -> None:
        forms = set(self.forms)
        for secret in secrets:
            if not secret:
                continue
            escaped = json.dumps(secret)[1:-1]
            forms |= {secret, escaped, escaped.replace("/", "\\/"), secret.replace("/", "\\/"),
                      quote(secret, safe=""), quote(secret, safe="/"), quote(secret)}
        self.forms = sorted((f for f in forms if f), key=len, reverse=True)

    def __call__(self, text: str, *, min_length: int = 1) -> str:
        """``text`` with each form (of at least ``min_length`` characters) replaced by ``***``."""
        for form in self.forms:
            if len(form) >= min_length and form in text:
                text = text.replace(form, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self.forms)
