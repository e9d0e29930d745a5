"""Reading a chat-completions answer: the answer codes' probabilities from its log-probs, and whether
its text is a JSON object (``--structured json`` honoured). Shared by the HTTP backends
(:mod:`medvlm.vlm.openai_compat`, :mod:`medvlm.vlm.litellm_backend`); no parsing of the answer itself
(that happens after the cache, with the task's parser).
"""

from __future__ import annotations

import math
import re
from typing import Any

from medvlm.vlm.types import VLMResponse

#: secrets shorter than this are not masked inside answers (they would mask digits and words)
ANSWER_SECRET_MIN = 6

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


def add_code_probs(response: VLMResponse, content: list[dict[str, Any]], codes: tuple[str, ...]) -> None:
    """Set ``response.code_probs`` and ``mass`` from ``logprobs.content`` (:func:`answer_probs`; left
    unset when no answer token is found)."""
    code_probs = answer_probs(content, codes)
    if code_probs is not None:
        response.code_probs, response.mass = code_probs, float(sum(code_probs.values()))


def is_json_object(text: str) -> bool:
    """Whether ``text`` (stripped, code fences removed) parses as a JSON object.

    >>> is_json_object('```json\\n{"choice": 1}\\n```'), is_json_object("Choice: 1")
    (True, False)
    """
    import json

    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False
