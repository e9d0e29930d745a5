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


#: words that turn a named answer into its opposite ("not pneumonia", "non-tumour", "rules out ...")
_NEGATION = re.compile(
    r"\b(?:not|no|non|never|neither|nor|without|isn'?t|unlikely|rule[sd]?\s+out|excluded?)\b", re.IGNORECASE)
#: a line that is only a keyword: a heading whose answer is on the next line ("## Answer\n\nPneumonia")
_HEADING = re.compile(rf"^\s*(?:the\s+|my\s+)?{_KEYWORD}\s*:?\s*$", re.IGNORECASE)
#: what may follow a name that is the whole answer phrase: the line's end, punctuation, a bracket, a dash
_PHRASE_END = re.compile(r"[^\S\n]*(?:$|[.,;:!?)\]\"'(]|[-\u2013\u2014]\s)")
#: the answer fragment after a name: up to a comma, semicolon, line end or a full stop ending a sentence
_FRAGMENT_END = re.compile(r"[,;\n]|\.(?:\s|$)|$")


def name_pattern(name: str) -> re.Pattern[str]:
    """A regex matching an answer's name as whole words, any case, words joined by spaces, hyphens or
    underscores (or nothing: markdown cleaning drops underscores); a full stop in the name is optional
    (``"st. elevation"`` also reads ``"ST elevation"``); letters of any script bound the words.

    >>> bool(name_pattern("pleural effusion").search("Choice: Pleural-Effusion"))
    True
    >>> bool(name_pattern("normal").search("abnormal"))
    False
    """
    words = [re.escape(w).replace(r"\.", r"\.?") for w in re.split(r"[\s_\-]+", name.strip()) if w]
    if not words:
        raise ValueError("an answer name needs at least one word")
    return re.compile(r"(?<![^\W_])" + r"[\s_\-]*".join(words) + r"(?![^\W_])", re.IGNORECASE)


class NameParser(ChoiceParser):
    """A :class:`ChoiceParser` that also reads the answers' names as written, for tasks with many classes:
    ``"Choice: 2"``, ``"Choice: pneumonia"``, ``"The answer is Pneumonia."``, ``{"choice": "pneumonia"}``,
    or an answer that is just a name (``"Pneumonia."``, or a first line that is one).

    ``answer_names``: answer ``i``'s name (the task's classes, then its abstaining answers); ``names``:
    more ``(regex, code)`` synonyms. The rules, in order:

    1. The code wins: a digit after the keyword (or a bare digit) is the answer; a name written next to
       it (``"Choice: 2 (grade 2)"``) must name the same answer, else None.
    2. A name only when no code: the answer phrase after the keyword must *be* a name, as a whole
       phrase -- the name first, then only punctuation, a bracket, a dash or the line's end
       (``"Choice: pleural effusion."``, ``"The answer is no lesion"``). Where names begin alike
       (``"pneumonia"``, ``"pneumonia (viral)"``) the longest one that fits wins; a phrase that only
       contains a name (``"viral pneumonia"`` when the classes are ``pneumonia`` and ``bacterial
       pneumonia``) names none.
    3. Never guesses: a fragment naming two answers, a name under a negation (``"not pneumonia"``), or a
       digit and a name that disagree give None. The BraTS tasks keep their :class:`ChoiceParser` (their
       answers unchanged).

    >>> parse = NameParser(4, answer_names=["normal", "effusion", "pleural effusion", "none of these"])
    >>> parse("Choice: 1"), parse("The answer is Pleural Effusion."), parse("Effusion")
    (1, 2, 1)
    >>> parse("Choice: normal or effusion"), parse("The answer is not normal."), parse("Choice: 0 (effusion)")
    (None, None, None)
    """

    def __init__(self, n_codes: int, *, answer_names: Sequence[str], names: Sequence[tuple[str, int]] = (),
                 codes: Sequence[str] | None = None) -> None:
        super().__init__(n_codes, codes=codes)
        if len(answer_names) > n_codes:
            raise ValueError(f"{len(answer_names)} answer names for {n_codes} answer codes")
        folded = [" ".join(re.split(r"[\s_\-]+", n.strip().lower())) for n in answer_names]
        if len(set(folded)) != len(folded):
            raise ValueError(f"answer names must differ: {list(answer_names)}")
        self.answer_names = tuple(answer_names)
        self._extra = [(str(p), int(c)) for p, c in names]
        self._plain = ChoiceParser(n_codes, codes=codes)  # the codes alone (rule 1)
        self._names = [(name_pattern(n), i) for i, n in enumerate(answer_names)] + [
            (re.compile(p, re.IGNORECASE), c) for p, c in self._extra]
        self._name_after_keyword = re.compile(
            rf"\b{_KEYWORD}\b[^\S\n]*(?:[:=\-]|(?:is|was|would\s+be)\b[^\S\n]*[:=\-]?)\s*([^\n.,;]*)",
            re.IGNORECASE)
        self._phrase_after_keyword = re.compile(
            rf"\b{_KEYWORD}\b[^\S\n]*(?:[:=\-]|(?:is|was|would\s+be)\b[^\S\n]*[:=\-]?)\s*([^\n]*)",
            re.IGNORECASE)

    def with_codes(self, codes: Sequence[str]) -> NameParser:
        return NameParser(self.n_codes, answer_names=self.answer_names, names=self._extra, codes=codes)

    def _name_choice(self, fragment: str) -> int | None:
        """The one answer ``fragment`` names (the longest of overlapping names), None when it names none,
        several, or one under a negation."""
        hits = [(m.start(), m.end(), code) for pattern, code in self._names
                for m in pattern.finditer(fragment)]
        kept = [h for h in hits if not any(o[0] <= h[0] and h[1] <= o[1] and o[1] - o[0] > h[1] - h[0]
                                           for o in hits)]
        codes = {code for _, _, code in kept}
        if len(codes) != 1:
            return None
        rest = list(fragment)
        for start, end, _ in hits:  # the names themselves may hold a negation ("no finding")
            rest[start:end] = " " * (end - start)
        return None if _NEGATION.search("".join(rest)) else codes.pop()

    def _phrase_choice(self, phrase: str) -> int | None:
        """The answer whose name *is* ``phrase`` (rule 2: the name first, then only punctuation, a bracket,
        a dash or the end; the longest such name), checked on its fragment (a bracket or a clause after
        the name naming another answer, or a negation, gives None)."""
        phrase = phrase.lstrip(" \t\"'([")
        best: tuple[int, int] | None = None
        for text in (phrase, re.sub(r"^(?:a|an|the)\s+", "", phrase, flags=re.IGNORECASE)):  # "a mass"
            for pattern, code in self._names:
                match = pattern.match(text)
                if match and _PHRASE_END.match(text, match.end()) and (best is None or match.end() > best[0]):
                    best, phrase = (match.end(), code), text
            if best is not None:
                break
        if best is None:
            return None
        end = _FRAGMENT_END.search(phrase, best[0]).start()
        return best[1] if self._name_choice(phrase[:end]) == best[1] else None

    def _whole_name(self, text: str) -> int | None:
        """The answer ``text`` is nothing but the name of (markdown, a list dash and end punctuation
        aside)."""
        core = re.sub(r"^[\s\-]+|[\s.!:]+$", "", text)
        hits = {code for pattern, code in self._names if pattern.fullmatch(core)}
        return hits.pop() if len(hits) == 1 else None

    def _json_name(self, text: str) -> tuple[bool, int | None]:
        """(found a JSON object whose choice is a word, the answer it names)."""
        for match in _JSON_OBJECT.finditer(text):
            try:
                obj = json.loads(match.group(0))
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                for key, value in obj.items():
                    if str(key).strip().lower() in _JSON_KEYS:
                        if isinstance(value, str) and value.strip() not in self._codes:
                            return True, self._whole_name(value)
                        return False, None
        return False, None

    def __call__(self, text: str | None) -> int | None:
        if not text or not text.strip():
            return None
        found, named = self._json_name(text)
        if found:
            return named
        code = self._plain(text)
        clean = _clean(text)
        if code is None:
            phrases = self._phrase_after_keyword.finditer(clean)
            named_codes = {self._phrase_choice(m.group(1)) for m in phrases}
            named_codes.discard(None)
            if named_codes:
                return named_codes.pop() if len(named_codes) == 1 else None
            lines = [line for line in clean.splitlines() if line.strip()][:2]
            if len(lines) == 2 and _HEADING.match(lines[0]):
                lines = lines[1:]
            return self._whole_name(lines[0]) if lines else None
        fragments = [m.group(1) for m in self._name_after_keyword.finditer(clean)]
        if not self._plain._digit.search(clean):  # the code stood alone on the first line ("2. grade 2")
            first = next((line for line in clean.splitlines() if line.strip()), "")
            first = re.sub(r"^\s*[\(\[]?\d[\)\]]?\s*[.:\-\u2013\u2014]?\s*", "", first)
            fragments.append(first[:_FRAGMENT_END.search(first).start()])
        named_codes = {self._name_choice(f) for f in fragments}
        named_codes.discard(None)
        return code if not named_codes or named_codes == {code} else None
