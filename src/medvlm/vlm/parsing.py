"""Read the answer code out of what a VLM wrote: a code index (0, 1, ...) or None. Knows no task.

A task builds one :class:`ChoiceParser` from its answer codes (digits ``0..n-1``) and, optionally, the
words that name each answer (regexes, e.g. a class name). The parser accepts what real models write --
``"Choice: 1 Reasoning: ..."``, the choice on its own line after blank lines or a heading
(``"## Choice\\n\\n1"``), markdown emphasis (``"**Choice:** 0"``), JSON (``{"choice": 1}``, also inside
a code fence), a bare digit, or an answer's name after the keyword -- and never guesses: no keyword, an
echoed template (``"Choice: <0, 1, or 2>"``), a hedge (``"1 or 2"``) or two different choices give None
(counted as unparsed; the raw text is kept verbatim elsewhere).

>>> parse = ChoiceParser(3, names=[(r"\\bred\\b", 0), (r"\\bblue\\b", 1)])
>>> parse("Choice: 1 Reasoning: looks blue")
1
>>> parse("**Choice:** 0")
0
>>> parse('{"choice": 2, "reasoning": "neither"}')
2
>>> parse("Choice: red."), parse("It looks red.") is None
(0, True)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

_KEYWORD = r"(?:choice|answer|classification|final\s+answer)"
_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
_JSON_KEYS = ("choice", "answer", "class", "label")


def _clean(text: str) -> str:
    """Drop markdown emphasis, code ticks and heading marks; keep line structure."""
    text = re.sub(r"[*_`]+", "", text)
    text = re.sub(r"^[ \t]*#+[ \t]*", "", text, flags=re.MULTILINE)
    return text


class ChoiceParser:
    """``parser(text) -> code index or None`` for answer codes ``0..n_codes-1`` (1 to 10 codes).

    ``names``: ``(regex, code)`` pairs naming answers in words (case-insensitive), read only right
    after the keyword (``"Choice: <name>"``); a fragment naming two different codes gives None.
    ``codes``: the digit a prompt asks for each answer, in answer order (default ``"0", "1", ...``: answer
    ``i`` is written ``i``); with another order (a prompt with swapped codes) a digit read is mapped back
    to its answer, while a name (``names``) still means its own answer. Never raises.

    >>> swapped = ChoiceParser(3, names=[(r"\\bred\\b", 0)], codes=("1", "0", "2"))
    >>> swapped("Choice: 0"), swapped("Choice: 1"), swapped("Choice: 2"), swapped("Choice: red")
    (1, 0, 2, 0)
    """

    def __init__(self, n_codes: int, *, names: Sequence[tuple[str, int]] = (),
                 codes: Sequence[str] | None = None) -> None:
        if not 1 <= n_codes <= 10:
            raise ValueError("a choice parser reads single-digit codes: 1 to 10 of them")
        natural = [str(i) for i in range(n_codes)]
        codes = list(natural if codes is None else codes)
        if sorted(codes) != natural:
            raise ValueError(f"codes must be an order of {natural}, got {codes}")
        self.n_codes = n_codes
        self.codes = tuple(codes)
        self._name_specs = [(str(p), int(c)) for p, c in names]
        self._answer = {int(c): i for i, c in enumerate(codes)}
        d = f"[0-{n_codes - 1}]"
        self._digit = re.compile(
            rf"\b{_KEYWORD}\b[\"']?[^\S\n]*(?:is)?[^\S\n]*[:=\-]?\s*[\(\[<\"']?\s*({d})(?!\d|\.\d)"
            r"(?!\s*[,/]\s*\d)(?!\s*(?:or|and)\s+\d)",
            re.IGNORECASE,
        )
        self._names = [(re.compile(pattern, re.IGNORECASE), int(code)) for pattern, code in names]
        self._name_after_keyword = re.compile(rf"\b{_KEYWORD}\b[^\S\n]*[:=\-]\s*([^\n.,;(]*)", re.IGNORECASE)
        self._bare = re.compile(rf"^\s*[\(\[]?({d})[\)\]]?\s*[.:]?\s*$")
        self._first_line = re.compile(rf"^\s*[\(\[]?({d})[\)\]]?(?:\s*[.:\-\u2013\u2014]\s+|\s+-\s+|\s*$)")
        self._codes = {str(i) for i in range(n_codes)}

    def with_codes(self, codes: Sequence[str]) -> ChoiceParser:
        """The same parser for a prompt that asks for answer ``i`` with the digit ``codes[i]``."""
        return ChoiceParser(self.n_codes, names=self._name_specs, codes=codes)

    def _from_json(self, text: str) -> tuple[bool, int | None]:
        """(found a JSON object with a choice key, its value if valid)."""
        for match in _JSON_OBJECT.finditer(text):
            try:
                obj = json.loads(match.group(0))
            except json.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            for key, value in obj.items():
                if str(key).strip().lower() in _JSON_KEYS:
                    if isinstance(value, bool):
                        return True, None
                    if isinstance(value, int) and 0 <= value < self.n_codes:
                        return True, value
                    if isinstance(value, str) and value.strip() in self._codes:
                        return True, int(value.strip())
                    return True, None
        return False, None

    def _name_choice(self, fragment: str) -> int | None:
        hits = {code for pattern, code in self._names if pattern.search(fragment)}
        return hits.pop() if len(hits) == 1 else None

    def __call__(self, text: str | None) -> int | None:
        """The answer index (the answer's position in the task, whatever digit the prompt used) or None."""
        if not text or not text.strip():
            return None
        found, value = self._from_json(text)
        if found:
            return None if value is None else self._answer[value]
        clean = _clean(text)
        digits = {int(m.group(1)) for m in self._digit.finditer(clean)}
        if len(digits) == 1:
            return self._answer[digits.pop()]
        if len(digits) > 1:
            return None
        names = set()
        for match in self._name_after_keyword.finditer(clean):
            code = self._name_choice(match.group(1))
            if code is not None:
                names.add(code)
        if len(names) == 1:
            return names.pop()
        if len(names) > 1:
            return None
        bare = self._bare.match(clean)
        if bare:
            return self._answer[int(bare.group(1))]
        first = next((line for line in clean.splitlines() if line.strip()), "")
        match = self._first_line.match(first)
        if match and not re.search(r"\d", clean[clean.find(first) + match.end():].split("\n", 1)[0][:3]):
            return self._answer[int(match.group(1))]
        return None
