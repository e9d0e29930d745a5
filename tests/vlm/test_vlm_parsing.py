"""medvlm.vlm.parsing.ChoiceParser on its own: parsers built here (not at import), every rule and guard.

The tasks' parsers are built when their modules are imported; these tests build their own, so a change to
the constructor (code range, keyword regexes, names) shows here. Real answer strings of the study are in
tests/tasks/test_brats_grading_parser.py; this table adds the edges of each rule.
"""

from __future__ import annotations

import pytest

from medvlm.vlm.parsing import ChoiceParser

#: brats-grading's answer words (copied: a change to the task's words must not change this test)
WORDS = [
    (r"no\s+glioma|no\s+tumou?r|healthy|normal", 2),
    (r"low[\s-]*grade(?:\s+glioma)?|\blgg\b", 0),
    (r"high[\s-]*grade(?:\s+glioma)?|\bhgg\b", 1),
]

CASES = [
    # the keyword rule, and what may follow the digit
    ("Choice: 1 Reasoning: enhancing", 1),
    ("choice = 2", 2),
    ("Answer is 0", 0),
    ("Classification: 1", 1),
    ("Choice: 3", None),                      # beyond the codes
    ("Choice: 1 or 2", None),                 # a hedge
    ("Choice: 0 and 1", None),
    ("Choice: 1, 2", None),
    ("Choice: 1/2", None),
    ("Choice: 1.5", None),
    ("Choice: 10", None),
    ("Choice: 0\nChoice: 1\nChoice: high grade", None),   # two digits: a name later does not settle it
    ("Choice: 1\nChoice: 1", 1),
    # names after the keyword (case-insensitive), one code only
    ("CHOICE: HIGH GRADE", 1),
    ("Choice: lgg", 0),
    ("Choice: healthy", 2),
    ("Choice: low grade or high grade", None),
    ("1\nChoice: low grade\nChoice: high grade", None),   # two names: a bare first line does not settle it
    ("Choice: purple", None),
    # JSON: a choice key decides, even when the text says otherwise
    ('{"choice": 0}', 0),
    ('{"label": 1}', 1),
    ('{"Label": 1}', 1),                      # keys in any case
    ('{"class": 0}', 0),
    ('{"class": "2"}', 2),
    ('{"answer": " 1 "}', 1),
    ('{"choice": 3}', None),
    ('{"choice": -1}', None),
    ('{"choice": true, "reasoning": "Choice: 1"}', None),  # a boolean is not a code
    ('{"class": [1], "note": "Choice: 1"}', None),         # nor a list
    ('{"choice": "one"}', None),
    ('{oops} {"label": "1"}', 1),             # a broken object before a good one
    ('{"reasoning": "necrosis"} Choice: 1', 1),  # an object without a choice key: the text decides
    # headings and emphasis are dropped on every line
    ("\n## 1", 1),
    ("\n\n### 2\n", 2),
    ("**", None),                             # nothing left once the emphasis is dropped
    # a bare digit, and a digit opening the first line
    ("(1)", 1),
    ("[2].", 2),
    ("0:", 0),
    ("1 - enhancing rim", 1),
    ("2. no lesion", 2),
    ("1: a 2nd opinion", None),               # a digit right after: not an answer
    ("1: seg1 shows enhancement", 1),         # a digit further on is fine
    ("0 - \n12 mm\nend", 0),                  # only the rest of the first line counts
    ("0 - a\n0 - a2", 0),                     # the first line, not a later copy of it
    ("12 mm lesion", None),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_a_fresh_parser_reads_the_table(text, expected):
    assert ChoiceParser(3, names=WORDS)(text) == expected


@pytest.mark.parametrize("n_codes", range(1, 11))
def test_codes_are_the_first_n_digits(n_codes):
    parse = ChoiceParser(n_codes)
    assert parse.n_codes == n_codes
    assert [parse(f"Choice: {i}") for i in range(n_codes)] == list(range(n_codes))
    assert [parse(f'{{"choice": "{i}"}}') for i in range(n_codes)] == list(range(n_codes))
    if n_codes < 10:
        assert parse(f"Choice: {n_codes}") is None and parse(f"{n_codes}") is None
        assert parse(f'{{"choice": {n_codes}}}') is None


@pytest.mark.parametrize("n_codes", [0, 11])
def test_only_single_digit_codes(n_codes):
    with pytest.raises(ValueError, match="^a choice parser reads single-digit codes: 1 to 10 of them$"):
        ChoiceParser(n_codes)


def test_without_names_words_are_never_read():
    parse = ChoiceParser(3)
    assert parse("Choice: high grade glioma") is None
    assert parse("Choice: 1") == 1


def test_name_codes_may_be_given_as_strings():
    assert ChoiceParser(2, names=[("red", "0"), ("blue", "1")])("Choice: Blue") == 1


def test_with_codes_keeps_the_names_and_a_bad_order_is_refused_in_full():
    from medvlm.vlm.parsing import ChoiceParser

    parse = ChoiceParser(2, names=[(r"high[- ]grade", 1), (r"low[- ]grade", 0)])
    swapped = parse.with_codes(["1", "0"])
    assert swapped.codes == ("1", "0") and swapped("Choice: 1") == 0 and swapped("Choice: 0") == 1
    assert swapped("Choice: high-grade") == 1 and swapped("Choice: Low grade") == 0  # names keep their class
    with pytest.raises(ValueError) as info:
        ChoiceParser(3, codes=["0", "1", "1"])
    assert str(info.value) == "codes must be an order of ['0', '1', '2'], got ['0', '1', '1']"


def test_a_first_line_answer_after_blank_lines_is_read():
    """A model that opens with blank lines: the first line *with text* is the one read."""
    parse = ChoiceParser(3)
    assert parse("\n\n1. The tumour enhances") == 1
    assert parse("\n  \n2 - no glioma") == 2


def test_codes_in_a_cycle_are_mapped_back_to_their_answers():
    """A prompt that writes answer 0 as "1", answer 1 as "2" and answer 2 as "0" (not a swap of two: the
    mapping and its inverse differ)."""
    parse = ChoiceParser(3, codes=("1", "2", "0"))
    assert [parse(f"Choice: {d}") for d in "120"] == [0, 1, 2]
    assert parse('{"choice": 1}') == 0 and parse("2") == 1


@pytest.mark.parametrize("text, expected", [
    ("Choice: high grade (rather than low grade)", 1), ("Choice: low grade, not high grade", 0),
    ("Choice: high grade. Low grade is less likely", 1), ("Choice: LGG; HGG unlikely", 0)])
def test_a_named_answer_ends_at_punctuation_or_a_bracket(text, expected):
    """The words after the keyword are read up to a bracket, comma, full stop or semicolon: the reasoning
    after them may name the other class."""
    assert ChoiceParser(3, names=WORDS)(text) == expected
