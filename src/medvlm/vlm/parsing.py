"""Read the class out of what a VLM wrote: 0 (LGG), 1 (HGG), 2 (no glioma), or None.

The parser accepts what real models write -- ``"Choice: 1 Reasoning: ..."``, the choice on its own line
after blank lines or a heading (``"## Choice\\n\\n1"``), markdown emphasis (``"**Choice:** 0"``), JSON
(``{"choice": 1}``, also inside a code fence), a bare digit, or a class name after the keyword
(``"Choice: High Grade Glioma"``) -- and never guesses: no keyword, an echoed template
(``"Choice: <0, 1, or 2>"``), a hedge (``"1 or 2"``) or two different choices give None (counted as
unparsed; the raw text is kept verbatim elsewhere).

>>> parse_choice("Choice: 1 Reasoning: enhancing rim, necrosis")
1
>>> parse_choice("**Choice:** 0")
0
>>> parse_choice('{"choice": 2, "reasoning": "normal"}')
2
>>> parse_choice("This looks like a high grade glioma.") is None
True
"""

from __future__ import annotations

import json
import re

_KEYWORD = r"(?:choice|answer|classification|final\s+answer)"
_DIGIT = re.compile(
    rf"\b{_KEYWORD}\b[\"']?[^\S\n]*(?:is)?[^\S\n]*[:=\-]?\s*[\(\[<\"']?\s*([0-2])(?!\d|\.\d)"
    r"(?!\s*[,/]\s*\d)(?!\s*(?:or|and)\s+\d)",
    re.IGNORECASE,
)
_NAMES = [
    (re.compile(r"no\s+glioma|no\s+tumou?r|healthy|normal", re.I), 2),
    (re.compile(r"low[\s-]*grade(?:\s+glioma)?|\blgg\b", re.I), 0),
    (re.compile(r"high[\s-]*grade(?:\s+glioma)?|\bhgg\b", re.I), 1),
]
_NAME_AFTER_KEYWORD = re.compile(rf"\b{_KEYWORD}\b[^\S\n]*[:=\-]\s*([^\n.,;(]*)", re.IGNORECASE)
_BARE = re.compile(r"^\s*[\(\[]?([0-2])[\)\]]?\s*[.:]?\s*$")
_FIRST_LINE = re.compile(r"^\s*[\(\[]?([0-2])[\)\]]?(?:\s*[.:\-\u2013\u2014]\s+|\s+-\s+|\s*$)")
_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)


def _clean(text: str) -> str:
    """Drop markdown emphasis, code ticks and heading marks; keep line structure."""
    text = re.sub(r"[*_`]+", "", text)
    text = re.sub(r"^[ \t]*#+[ \t]*", "", text, flags=re.MULTILINE)
    return text


def _from_json(text: str) -> tuple[bool, int | None]:
    """(found a JSON object with a choice key, its value if valid)."""
    for match in _JSON_OBJECT.finditer(text):
        try:
            obj = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        for key, value in obj.items():
            if str(key).strip().lower() in ("choice", "answer", "class", "label"):
                if isinstance(value, bool):
                    return True, None
                if isinstance(value, int) and value in (0, 1, 2):
                    return True, value
                if isinstance(value, str) and value.strip() in ("0", "1", "2"):
                    return True, int(value.strip())
                return True, None
    return False, None


def _name_choice(fragment: str) -> int | None:
    hits = {code for pattern, code in _NAMES if pattern.search(fragment)}
    return hits.pop() if len(hits) == 1 else None


def parse_choice(text: str | None) -> int | None:
    """The unambiguous choice in ``text`` (0 LGG, 1 HGG, 2 no glioma) or None. Never raises."""
    if not text or not text.strip():
        return None
    found, value = _from_json(text)
    if found:
        return value
    clean = _clean(text)
    digits = {int(m.group(1)) for m in _DIGIT.finditer(clean)}
    if len(digits) == 1:
        return digits.pop()
    if len(digits) > 1:
        return None
    names = set()
    for match in _NAME_AFTER_KEYWORD.finditer(clean):
        code = _name_choice(match.group(1))
        if code is not None:
            names.add(code)
    if len(names) == 1:
        return names.pop()
    if len(names) > 1:
        return None
    if _BARE.match(clean):
        return int(_BARE.match(clean).group(1))  # type: ignore[union-attr]
    first = next((line for line in clean.splitlines() if line.strip()), "")
    match = _FIRST_LINE.match(first)
    if match and not re.search(r"\d", clean[clean.find(first) + match.end():].split("\n", 1)[0][:3]):
        return int(match.group(1))
    return None
