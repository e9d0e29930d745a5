"""The study's data stage counts the synthetic cohort's patients by the task's class names."""

from __future__ import annotations

from types import SimpleNamespace

from medvlm.study_data import _class_counts


def _infos(*grades: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(grade=g) for g in grades]


def test_grading_counts_by_its_classes_in_label_order():
    counts = _class_counts(_infos("HGG", "LGG", "HGG", "HGG"), "brats-grading")
    assert counts == {"lgg": 1, "hgg": 3} and list(counts) == ["lgg", "hgg"]


def test_a_task_whose_classes_are_not_grades_gets_the_grades_apart():
    # brats-tumour's classes ("no tumour", "tumour") are no patient's grade: no lgg/hgg keys invented
    counts = _class_counts(_infos("HGG", "LGG", "HGG"), "brats-tumour")
    assert counts == {"grades": {"HGG": 2, "LGG": 1}}
