"""Table of real-looking answers: the parser reads what models write and never guesses."""

from __future__ import annotations

import pytest

from medvlm.tasks.brats_grading import parse_grade
from medvlm.vlm.prompts import ANSWER_PREFIX

CASES = [
    # the study's format
    ("Choice: 1 Reasoning: enhancement, necrosis, oedema, mass effect, heterogeneous", 1),
    ("Choice: 0 Reasoning: non-enhancing, homogeneous, well-defined", 0),
    ("Choice: 2 Reasoning: symmetric, normal ventricles", 2),
    ("choice:1", 1),
    ("Choice: 1.", 1),
    ("Choice: 1\nReasoning: irregular enhancing margin", 1),
    ("Choice: (1) High Grade Glioma", 1),
    ("Choice: [0]", 0),
    # own line after blank lines or a heading
    ("Choice:\n\n1\n\nReasoning: ring enhancement", 1),
    ("## Choice\n\n0\n\n## Reasoning\nT2 hyperintense, no enhancement", 0),
    ("Based on the image:\n\n**Choice:**\n\n2", 2),
    # markdown emphasis
    ("**Choice:** 0 **Reasoning:** low signal", 0),
    ("**Choice: 1**", 1),
    ("__Choice__: 2", 2),
    ("Choice: `1`", 1),
    # JSON
    ('{"choice": 1}', 1),
    ('{"choice": "0", "reasoning": "homogeneous"}', 0),
    ('```json\n{\n  "choice": 2,\n  "reasoning": "healthy"\n}\n```', 2),
    ('{"choice": 3}', None),
    ('{"choice": true}', None),
    # other wordings with the keyword
    ("The answer is 1.", 1),
    ("Final answer: 0", 0),
    ("Choice: High Grade Glioma. Reasoning: necrosis", 1),
    ("Choice: Low-grade glioma", 0),
    ("Choice: No Glioma", 2),
    # a bare digit
    ("1", 1),
    (" 0.\n", 0),
    ("2 - no visible lesion", 2),
    # the transformers backend parses prefix + continuation
    (ANSWER_PREFIX + " 1 Reasoning: enhancing", 1),
    (ANSWER_PREFIX + "\n\n0", 0),
    # ambiguous or absent: never guessed
    ("Choice: <0, 1, or 2> Reasoning: <Provide concise reasoning>", None),
    ("Choice: 1 or 2", None),
    ("Choice: 1/2", None),
    ("Choice: 1 Reasoning: ... Choice: 0", None),
    ("This appears to be a high grade glioma with necrosis.", None),
    ("I cannot provide a medical diagnosis.", None),
    ("Grade 2 according to WHO", None),
    ("Choice: 1.5", None),
    ("Choice: 12", None),
    ("", None),
    ("   \n", None),
    (None, None),
    ("Choice: High grade or low grade glioma", None),
    ("12 keywords: enhancing", None),
    ("1, 2", None),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_parse_grade(text, expected):
    assert parse_grade(text) == expected


def test_repeated_consistent_choice_is_fine():
    assert parse_grade("Choice: 1\n\nSummary: Choice: 1") == 1


#: real answers to the seed-swapped prompt ("Low Grade Glioma (1), High Grade Glioma (0), or No Glioma
#: (2)"): a digit is read as the answer the swapped prompt gave it, a name as itself
SWAPPED_CASES = [
    ("Choice: 1 Reasoning: non-enhancing, homogeneous, well-defined", 0),
    ("Choice: 0 Reasoning: enhancement, necrosis, oedema, mass effect", 1),
    ("Choice: 2 Reasoning: symmetric, normal ventricles", 2),
    ("**Choice:** 0", 1),
    ("## Choice\n\n1\n\n## Reasoning\nT2 hyperintense", 0),
    ('{"choice": 0, "reasoning": "ring enhancement"}', 1),
    ('{"choice": "1"}', 0),
    ("The answer is 0.", 1),
    ("1", 0),
    ("0 - enhancing rim", 1),
    (ANSWER_PREFIX + " 1 Reasoning: diffuse", 0),
    ("Choice: High Grade Glioma. Reasoning: necrosis", 1),  # a name means itself
    ("Choice: Low-grade glioma", 0),
    ("Choice: No Glioma", 2),
    ("Choice: <0, 1, or 2>", None),
    ("Choice: 0 or 1", None),
    ('{"choice": 3}', None),
    ("I cannot provide a medical diagnosis.", None),
]


@pytest.mark.parametrize(("text", "expected"), SWAPPED_CASES)
def test_seed_swapped_answers_are_read_back_to_the_same_labels(text, expected):
    from medvlm.tasks import get_task
    from medvlm.vlm.prompts import load_prompt

    task = get_task("brats-grading").for_prompt(load_prompt("seed-swapped"))
    assert task.codes == ("1", "0", "2")
    assert task.parser(text) == expected
    if expected is not None and "lioma" not in text:  # a digit: the seed's parser reads the other grade
        assert parse_grade(text) == {0: 1, 1: 0, 2: 2}[expected]
