"""Secrets never reach a file or the terminal: what counts as one, and how it is masked.

Secrets are the ``OPENAI_API_KEY`` (sent only as the ``Authorization`` header), the keys of the hosted
providers the ``litellm`` backend reads from their usual environment variables (:func:`env_secrets`:
``ANTHROPIC_API_KEY``, ``GEMINI_API_KEY``, ``AZURE_API_KEY``, ``AWS_SECRET_ACCESS_KEY``, ..., and any
``*_API_KEY``), the password and the
secret-named query values of a ``--base-url`` (``http://user:PASSWORD@host/v1?api_key=...``), and the
values of secret-named ``--extra-body`` fields (``api_key``, ``token``, ``password``, ...; sent in every
request, as asked). Records (run.json, experiment.json, sweep.json, the report) hold them masked as
``***`` (:func:`redact_record`); anything a server sends back -- error bodies, refusals, answers -- goes
through a :class:`Redactor` that masks every form a server may echo a secret in (verbatim, JSON-escaped,
percent-encoded or decoded, base64, a partial key). The recorded command line (run.json's ``command``)
is masked by :func:`redact_command`.

The encoded and partial forms a :class:`Redactor` masks:

- base64 (standard and URL-safe, with or without ``=`` padding) of each secret and of a base URL's
  ``user:password`` (the ``Authorization: Basic`` header httpx sends for it), standing alone or inside a
  longer base64 text (each of the three byte alignments; at least :data:`BASE64_MIN` characters);
- a prefix of a secret of at least :data:`PREFIX_MIN` characters (how OpenAI-style servers echo a key:
  ``sk-abc12345****wxyz``, ``sk-abc12345...``) that starts a token (no letter, digit, ``-`` or ``_``
  before it) and is followed by ``*``, ``…`` or ``...`` (those marks and a key suffix after them are
  masked too), or ends its token (the next character is none of those token characters). A longer
  token that merely shares the first characters (another key of the same ``sk-proj-`` family) is not a
  prefix and is left as it is.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

#: a field or query parameter whose value is a secret
SECRET_NAME = re.compile(r"key|token|secret|passw|auth|credential|bearer|cookie|session|signature",
                         re.IGNORECASE)
MASK = "***"
#: shortest base64 form masked (shorter ones would mask text by chance)
BASE64_MIN = 8
#: shortest prefix of a secret masked as a partial echo of it
PREFIX_MIN = 8
#: environment variables that hold a provider's key (LiteLLM reads them; none is ever written)
PROVIDER_KEY_VARS = (
    "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "GEMINI_API_KEY", "GOOGLE_API_KEY",
    "AZURE_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_AD_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID",
    "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK", "MISTRAL_API_KEY", "GROQ_API_KEY", "TOGETHERAI_API_KEY",
    "OPENROUTER_API_KEY", "COHERE_API_KEY", "HF_TOKEN", "HUGGINGFACE_API_KEY", "XAI_API_KEY",
    "DEEPSEEK_API_KEY", "FIREWORKS_AI_API_KEY", "VERTEXAI_CREDENTIALS", "OLLAMA_API_KEY",
    "HOSTED_VLLM_API_KEY", "LITELLM_API_KEY",
)
#: other environment variables whose value is a key by their name (a provider not listed above)
_KEY_VAR = re.compile(r"_(API_KEY|SECRET_ACCESS_KEY|SESSION_TOKEN|AUTH_TOKEN|API_TOKEN|ACCESS_TOKEN)$")
#: shortest value of a variable matched by name only that is masked (short values mask words)
ENV_SECRET_MIN = 8
#: characters that continue a token (a key, a password): a prefix must start and end a run of them
_TOKEN = re.compile(r"[A-Za-z0-9_\-]")
_ELLIPSIS = re.compile(r"\*+|…+|\.{3,}")


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


def env_secrets(environ: dict[str, str] | None = None) -> list[str]:
    """The provider keys in the environment: every :data:`PROVIDER_KEY_VARS` value, and the values (of
    at least :data:`ENV_SECRET_MIN` characters) of any other variable named like a key (``*_API_KEY``,
    ``*_SECRET_ACCESS_KEY``, ``*_SESSION_TOKEN``, ...).

    >>> env_secrets({"ANTHROPIC_API_KEY": "sk-ant-1", "FOO_API_KEY": "k" * 8, "BAR_API_KEY": "short",
    ...              "HOME": "/home/me"})
    ['sk-ant-1', 'kkkkkkkk']
    """
    env = os.environ if environ is None else environ
    found = [env[name] for name in PROVIDER_KEY_VARS if env.get(name)]
    found += [v for k, v in env.items() if k not in PROVIDER_KEY_VARS and _KEY_VAR.search(k.upper())
              and len(v) >= ENV_SECRET_MIN]
    return list(dict.fromkeys(found))


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


def url_userinfo(url: str) -> list[str]:
    """``user:password`` of ``url`` (as written and percent-decoded): httpx sends it base64-encoded as
    ``Authorization: Basic ...``, which a server may echo."""
    span = _password_span(url)
    if span is None:
        return []
    start = url.find("//")
    start = 0 if start < 0 else start + 2
    pair = url[start:span[1]]
    return sorted({pair, unquote(pair)})


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
            elif key == "command" and isinstance(value, str):
                out[key] = redact_command(value)
            else:
                out[key] = redact_record(value)
        return out
    if isinstance(data, list):
        return [redact_record(v) for v in data]
    return data


#: a token that may carry URL credentials: a scheme, or ``user:password@`` before the first ``/``
_URLISH = re.compile(r"://|^[^/\s]*:[^/\s]*@|[?&;][^=&;#\s]+=")
#: a secret-named JSON field left over in text that does not decode as a whole (a cut command line)
_JSON_FIELD = re.compile(r'("(?:[^"\\]|\\.)*")(\s*:\s*)("(?:[^"\\]|\\.)*"|[^\s,}\]]+)')


def redact_command(text: str, secrets: Iterable[str] = ()) -> str:
    """A recorded command line with its secrets masked: the password and secret-named query values of
    every URL in it (:func:`redact_url`), the secret-named fields of every JSON object in it
    (``--extra-body``; :func:`mask_body`), and -- anywhere else in the line -- those same values, the
    provider keys of this environment (:func:`env_secrets`: ``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...)
    and ``secrets``, in every form a :class:`Redactor` masks
    (values shorter than 4 characters only where they stood).

    >>> redact_command('medvlm x --base-url http://u:pw12@h/v1?api_key=q1 --extra-body {"token": "t9"}')
    'medvlm x --base-url http://u:***@h/v1?api_key=*** --extra-body {"token": "***"}'
    """
    found = [*secrets, *env_secrets()]
    pairs: list[str] = []
    tokens = text.split(" ")
    for i, token in enumerate(tokens):
        if _URLISH.search(token):
            found += url_secrets(token)
            pairs += url_userinfo(token)
            tokens[i] = redact_url(token)
    text = " ".join(tokens)
    out, pos = [], 0
    decoder = json.JSONDecoder()
    while (start := text.find("{", pos)) >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            out.append(text[pos:start + 1])
            pos = start + 1
            continue
        found += body_secrets(value)
        masked = mask_body(value)
        out.append(text[pos:start] + (text[start:end] if masked == value else json.dumps(masked)))
        pos = end
    text = "".join(out) + text[pos:]

    def field(match: re.Match[str]) -> str:
        if not SECRET_NAME.search(match.group(1)) or match.group(3) == f'"{MASK}"':
            return match.group(0)
        found.append(match.group(3).strip('"'))
        return f'{match.group(1)}{match.group(2)}"{MASK}"'

    text = _JSON_FIELD.sub(field, text)
    redactor = Redactor([f for f in found if len(f) >= 4 and f != MASK])
    redactor.add(pairs, encoded_only=True)
    return redactor(text)


class Redactor:
    """Masks ``secrets`` in text, in every form a server may echo them: verbatim, JSON-escaped (``\\/``,
    ``\\u..``), percent-encoded, base64, and a partial key (see the module docstring). Longer forms
    first, so one inside another leaves no tail.

    >>> Redactor(["s/3"])("got s/3, s\\\\/3 and s%2F3")
    'got ***, *** and ***'
    >>> r = Redactor(["sk-SECRETKEY-12345abcdef"])
    >>> r("key sk-SECRETKEY-12345ab**** is wrong; c2stU0VDUkVUS0VZLTEyMzQ1YWJjZGVm; sk-SECRETKEY-99")
    'key *** is wrong; ***; sk-SECRETKEY-99'
    """

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()) -> None:
        self.forms: list[str] = []
        self.partial: list[str] = []  # the forms whose prefixes are masked too
        self.add(secrets)

    def add(self, secrets: Iterable[str], *, encoded_only: bool = False) -> None:
        """Mask ``secrets`` from now on; ``encoded_only``: only their base64 forms (a ``user:password``
        whose password alone is the secret)."""
        forms, partial = set(self.forms), set(self.partial)
        for secret in secrets:
            if not secret:
                continue
            escaped = json.dumps(secret)[1:-1]
            plain = {secret, escaped, escaped.replace("/", "\\/"), secret.replace("/", "\\/")}
            encoded = _base64_forms(secret)
            if not encoded_only:
                forms |= plain | {quote(secret, safe=""), quote(secret, safe="/"), quote(secret)}
                partial |= {p for p in plain if len(p) > PREFIX_MIN}
            forms |= encoded | {e.replace("/", "\\/") for e in encoded}
        self.forms = sorted((f for f in forms if f), key=len, reverse=True)
        self.partial = sorted(partial, key=len, reverse=True)

    def __call__(self, text: str, *, min_length: int = 1) -> str:
        """``text`` with each form (of at least ``min_length`` characters) and each partial echo of a
        secret replaced by ``***``."""
        for form in self.forms:
            if len(form) >= min_length and form in text:
                text = text.replace(form, MASK)
        for secret in self.partial:
            if secret[:PREFIX_MIN] in text:
                text = _mask_prefixes(text, secret)
        return text

    def __bool__(self) -> bool:
        return bool(self.forms)


def _base64_forms(secret: str) -> set[str]:
    """base64 of ``secret`` (UTF-8) standing alone (padded and not) and the characters that encode it
    inside a longer base64 text at each of the three byte alignments; standard and URL-safe alphabets;
    each at least :data:`BASE64_MIN` characters long."""
    data = secret.encode("utf-8", "surrogatepass")
    alone = base64.b64encode(data).decode()
    forms = {alone, alone.rstrip("=")}
    for offset in range(3):
        text = base64.b64encode(bytes(offset) + data + bytes(2)).decode()
        first = -(-8 * offset // 6)  # the first character made of the secret's bits only
        last = (8 * (offset + len(data)) - 6) // 6  # the last one
        forms.add(text[first:last + 1])
    forms |= {f.replace("+", "-").replace("/", "_") for f in forms}
    return {f for f in forms if len(f) >= BASE64_MIN}


def _mask_prefixes(text: str, secret: str) -> str:
    """``text`` with each partial echo of ``secret`` masked (the rule in the module docstring)."""
    out, pos = [], 0
    while (start := text.find(secret[:PREFIX_MIN], pos)) >= 0:
        end = None
        if start == 0 or not _TOKEN.match(text[start - 1]):
            n = PREFIX_MIN
            while n < len(secret) and start + n < len(text) and text[start + n] == secret[n]:
                n += 1
            stop = start + n
            marks = _ELLIPSIS.match(text, stop)
            if marks:
                end = marks.end()
                tail = re.compile(r"[A-Za-z0-9_\-]+").match(text, end)
                if tail and secret.endswith(tail.group()):
                    end = tail.end()
            elif n == len(secret) or stop == len(text) or not _TOKEN.match(text[stop]):
                end = stop
        if end is None:
            out.append(text[pos:start + 1])
            pos = start + 1
        else:
            out.append(text[pos:start] + MASK)
            pos = end
    return "".join(out) + text[pos:]
