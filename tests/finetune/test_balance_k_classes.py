"""``finetune --balance`` on a task of more than two classes: every class is oversampled to the largest
class's count and listed in the balance record (issue 18 #6: only classes 0 and 1 were); a binary task
gets exactly what it got before."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from medvlm.finetune.data import Example, balance_examples


def _examples(counts):
    return [Example(f"p{label}-{i}", "image", i, label, b"") for label, n in enumerate(counts)
            for i in range(n)]


def _binary_before(examples, seed):
    """The binary rule as it was (the minority class repeated, then a seeded sample of the remainder)."""
    by = {0: [e for e in examples if e.label == 0], 1: [e for e in examples if e.label == 1]}
    out = list(examples)
    if by[0] and by[1] and len(by[0]) != len(by[1]):
        minor = 0 if len(by[0]) < len(by[1]) else 1
        reps, rest = divmod(max(len(by[0]), len(by[1])), len(by[minor]))
        out += by[minor] * (reps - 1) + random.Random(seed).sample(by[minor], rest)
    return out


def test_every_class_reaches_the_largest_count():
    examples = _examples([3, 2, 7])  # normal 3, pneumonia 2, effusion 7
    out, info = balance_examples(examples, seed=0, names=["normal", "pneumonia", "effusion"])
    assert Counter(e.label for e in out) == {0: 7, 1: 7, 2: 7}  # before: effusion 7, normal 3, pneumonia 7
    assert info == {"normal": 3, "pneumonia": 2, "effusion": 7, "normal_balanced": 7, "pneumonia_balanced": 7,
                    "effusion_balanced": 7}
    # each original example kept; pneumonia (2 -> 7): each repeated 3 times, one of them a 4th time
    pneumonia = Counter(e.patient_id for e in out if e.label == 1)
    assert sorted(pneumonia.values()) == [3, 4]
    assert balance_examples(examples, seed=0, names=["normal", "pneumonia", "effusion"])[0] == out  # seeded


def test_a_class_without_examples_stays_empty_and_is_listed():
    out, info = balance_examples(_examples([1, 0, 4]), names=["a", "b", "c"])
    assert info == {"a": 1, "b": 0, "c": 4, "a_balanced": 4, "b_balanced": 0, "c_balanced": 4}
    assert balance_examples(_examples([0, 0, 4]), names=["a", "b", "c"])[1]["c_balanced"] == 4


@pytest.mark.parametrize(("counts", "seed"),
                         [((2, 5), 0), ((7, 3), 1), ((4, 4), 2), ((0, 3), 0), ((5, 1), 9)])
def test_binary_balancing_is_unchanged(counts, seed):
    examples = _examples(counts)
    out, info = balance_examples(examples, seed=seed, names=("lgg", "hgg"))
    assert out == _binary_before(examples, seed)
    assert list(info) == ["lgg", "hgg", "lgg_balanced", "hgg_balanced"]
