"""What a task is: its classes, answer codes and parser, its unit, and where its data and views live.

A task is one frozen :class:`Task` declared in one module of ``medvlm.tasks`` and registered by name in
:data:`medvlm.tasks.TASKS`. Everything generic (backends, cache, engine, aggregation, metrics, report)
takes its class names, answer codes, column names and parser from the task -- never from a constant of
its own.

Conventions: class ``i`` of ``classes`` has label ``i``; answer code ``i`` (the digit the prompt asks
for) means class ``i`` for ``i < len(classes)``; codes beyond the classes abstain (e.g. "no glioma").
The positive class of a binary task is the one whose probability is ``score``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from medvlm.vlm.parsing import ChoiceParser

UNITS = ("patient", "slice", "image")
#: key columns of one prediction row, per unit (patient_id is always there)
UNIT_KEYS = {"patient": [], "slice": ["orientation", "slice_index"], "image": ["image_id"]}


#: columns medvlm writes next to a task's class columns (``p_<class>``, ``n_<class>``, ``<class>_share``):
#: a class whose column would be one of these is refused (:func:`class_columns`)
RESERVED_COLUMNS = {"n_unparsed": "unparsed answers", "n_failed": "failed requests",
                    "n_calls": "model calls", "parsed_share": "the parsed share of calls"}


def slug(name: str) -> str:
    """A column-safe lower-case name, letters of any script kept (NFC): ``"no tumour"`` -> ``"no_tumour"``,
    ``"Pleural-Effusion"`` -> ``"pleural_effusion"``, ``"œdème"`` -> ``"œdème"``, ``"肺炎"`` -> ``"肺炎"``.
    ASCII names give what they always gave (``[^0-9a-z]+`` -> ``_``)."""
    import unicodedata

    return re.sub(r"[\W_]+", "_", unicodedata.normalize("NFC", name).lower()).strip("_")


def class_columns(name: str) -> tuple[str, str, str]:
    """``(p_<slug>, n_<slug>, <slug>_share)``: the probability, vote-count and share columns of a class;
    ValueError when the slug is empty or a column is one medvlm already writes (:data:`RESERVED_COLUMNS`).

    >>> class_columns("Pleural effusion")
    ('p_pleural_effusion', 'n_pleural_effusion', 'pleural_effusion_share')
    """
    key = slug(name)
    if not key:
        raise ValueError(f"class name {name!r} has no letter or digit to name its columns")
    columns = (f"p_{key}", f"n_{key}", f"{key}_share")
    for column in columns:
        if column in RESERVED_COLUMNS:
            raise ValueError(f"class name {name!r} would write the column {column}, which already counts "
                             f"{RESERVED_COLUMNS[column]}; rename the class, e.g. {name + '-class'!r}")
    return columns


@dataclass(frozen=True)
class AnswerCode:
    """One answer a prompt asks for: its digit is its index in :attr:`Task.answers`.

    ``name``: shown in reports (a class name, or an abstaining answer's); ``prob_column``/``count_column``:
    its
    columns in slices.csv (class probability) and patients.csv (vote count).
    """

    name: str
    prob_column: str
    count_column: str


@dataclass(frozen=True)
class Task:
    """One imaging task. See the module docstring for the label and answer conventions.

    - ``classes``: class names in label order; ``positive``: the positive class (binary tasks).
    - ``answers``: the answer codes the prompt asks for (the first ``len(classes)`` are the classes).
    - ``parser``: raw answer text -> answer code or None; ``parser_version`` is recorded in run.json
      (bump it when the parser changes what it reads; cached raw answers are re-parsed for free).
    - ``answer_prefix``: the text an answer starts with (``"Choice:"``); a backend that writes the
      start of the model's turn itself (transformers) ends its prompt with it.
    - ``unit``: what one row of predictions.csv is (``patient``, ``slice`` or ``image``).
    - ``share_column``/``share_label``: column and display name of the per-unit share of positive
      votes (patients.csv / units.csv; ``gldr``/GLDR in brats-grading).
    - ``prompts``: the built-in prompt names of this task, the first one the default.
    - ``orientations``/``modalities``/``default_modalities``: the views a VLM may ask for.
    - ``cnn_model``: the default ``train-cnn --model``.
    - ``source``: lazy ``"module:attr"`` targets of the task's data functions: ``prepare`` (DATA ->
      WORK; a slice-level task also writes ``WORK/units.csv``) and ``synth`` (a synthetic cohort).
    - ``reference_standard``, ``preprocessing``, ``limitations``: the report's study sections (CLAIM
      items, limitations) in the task's own words.
    - ``spec``: a task declared in a YAML file (:mod:`medvlm.tasks.yaml_task`): its declaration; its data
      functions get the task as ``task=``.
    """

    name: str
    description: str
    classes: tuple[str, ...]
    positive: str | None
    answers: tuple[AnswerCode, ...]
    parser: Callable[[str | None], int | None]
    parser_version: str
    unit: Literal["patient", "slice", "image"]
    answer_prefix: str = "Choice:"
    share_column: str = "share"
    share_label: str = "positive share"
    prompts: tuple[str, ...] = ("seed",)
    orientations: tuple[str, ...] = ()
    default_orientations: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    default_modalities: tuple[str, ...] = ()
    cnn_model: str = "small3d"
    cnn_spatial_dims: int = 3
    default_slices: str = "tumour"
    source: dict[str, str] = field(default_factory=dict)
    reference_standard: str = ""
    preprocessing: str = ""
    limitations: str = ""
    all_positive_note: str = ""
    answer_digits: tuple[str, ...] = ()  # () = answer i is written i; see with_answer_codes
    spec: Any = field(default=None, compare=False)  # a YAML task's declaration (tasks.yaml_task.TaskSpec)

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"task {self.name}: unit must be one of {UNITS}")
        if len(self.answers) < len(self.classes):
            raise ValueError(f"task {self.name}: every class needs an answer code")
        if self.positive is not None and self.positive not in self.classes:
            raise ValueError(f"task {self.name}: positive {self.positive!r} is not a class")

    # ---------------------------------------------------------------- derived, never stored twice
    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def positive_label(self) -> int:
        """Label of the positive class (the last class when none is named)."""
        return self.classes.index(self.positive) if self.positive is not None else self.n_classes - 1

    @property
    def codes(self) -> tuple[str, ...]:
        """The answer codes as the digits a model writes, in answer order: ``("0", "1", "2")`` (a prompt
        with swapped codes: ``("1", "0", "2")``, see :meth:`with_answer_codes`)."""
        return self.answer_digits or tuple(str(i) for i in range(len(self.answers)))

    def with_answer_codes(self, codes: tuple[str, ...] | list[str] | None) -> Task:
        """This task asked by a prompt that writes answer ``i`` as the digit ``codes[i]`` (None or the
        natural order: the task itself). The copy requests, scores and parses those digits and maps
        them back, so ``choice`` stays the answer's index (0 = the first class) everywhere downstream.
        ConfigError when ``codes`` is not an order of the task's codes or the parser cannot remap."""
        import dataclasses

        from medvlm.errors import ConfigError

        natural = tuple(str(i) for i in range(len(self.answers)))
        codes = tuple(codes or natural)
        if codes == self.codes:
            return self
        if sorted(codes) != list(natural):
            raise ConfigError(f"task {self.name}: answer codes {list(codes)} are not an order of "
                              f"{list(natural)}")
        remap = getattr(self.parser, "with_codes", None)
        if remap is None:
            raise ConfigError(f"task {self.name}: its parser cannot read answer codes in another order")
        return dataclasses.replace(self, answer_digits=() if codes == natural else codes, parser=remap(codes))

    def for_prompt(self, prompt: Any) -> Task:
        """The task as ``prompt`` (a :class:`~medvlm.vlm.prompts.Prompt`) asks it: its answer codes."""
        return self.with_answer_codes(getattr(prompt, "codes", None))

    @property
    def prob_columns(self) -> list[str]:
        return [a.prob_column for a in self.answers]

    @property
    def count_columns(self) -> list[str]:
        return [a.count_column for a in self.answers]

    @property
    def answer_names(self) -> dict[str, str]:
        """``{"0": <name of answer 0>, ...}``: code -> name."""
        return {str(i): a.name for i, a in enumerate(self.answers)}

    @property
    def unit_keys(self) -> list[str]:
        return list(UNIT_KEYS[self.unit])

    @property
    def default_prompt(self) -> str:
        return self.prompts[0]

    def label_of(self, name: str, parameter: str = "class") -> int:
        """A class name (any case) -> its label; ConfigError naming ``parameter`` with a "did you mean"."""
        from medvlm.registry import check_choice

        names = [c.lower() for c in self.classes]
        return names.index(check_choice(parameter, name.lower(), names))

    def views(self, orientations: list[str] | None, modalities: list[str] | None = None, *,
              slices: str | None = None) -> tuple[list[str], list[str]]:
        """Orientations and modalities asked for (None: the task's defaults), checked against the task's
        (ConfigError with a "did you mean"). An image task (one 2D image per prediction) has no
        orientations, modalities or slices to choose: asking for them is one line saying so."""
        from medvlm.errors import ConfigError
        from medvlm.registry import check_choice

        if self.unit == "image":
            asked = [(option, value) for option, value, default in (
                ("--orientations", orientations, None), ("--modalities", modalities, None),
                ("--slices", slices, self.default_slices)) if value and value != default]
            if asked:
                option, value = asked[0]
                shown = ",".join(value) if isinstance(value, list | tuple) else value
                raise ConfigError(f"{option} {shown}: {self.name} is an image task (one prediction per 2D "
                                  f"image): its images have no slices, orientations or modalities to "
                                  f"choose; leave {option} out")
        orientations = list(orientations or self.default_orientations)
        modalities = [m.strip().lower() for m in (modalities or self.default_modalities)]
        for o in orientations:
            check_choice("orientations", o, self.orientations)
        for m in modalities:
            check_choice("modalities", m, self.modalities)
        return orientations, modalities

    def check_prompt(self, prompt: str, option: str = "--prompt") -> str:
        """``prompt`` unless it is another task's built-in prompt (a file is the user's own choice); a
        YAML task's prompt named as ``medvlm tasks`` lists it (``<task>-<variant>``): its file in WORK."""
        from pathlib import Path

        from medvlm.errors import ConfigError
        from medvlm.vlm.prompts import builtin_prompts

        for own in self.prompts:  # a YAML task's prompt files, named <task>-<variant> (or <task>)
            if own != prompt and Path(own).suffix == ".txt" and Path(own).stem == prompt:
                return own
        if prompt in builtin_prompts() and prompt not in self.prompts:
            raise ConfigError(f"{option} {prompt}: a built-in prompt of another task, asking for other "
                              f"answers; {self.name}'s prompts are {list(self.prompts)} (or give a prompt "
                              "file)")
        return prompt

    def tie_break_label(self, name: str | None) -> int:
        """``--tie-break`` (a class name, any case) -> its label. None: the positive class; a task of more
        than two classes that names none: the first class, so a tie goes to the lowest-numbered of the
        tied classes (:func:`medvlm.aggregate.majority`)."""
        if name is None:
            return self.positive_label if self.positive is not None or self.n_classes == 2 else 0
        return self.label_of(name, "--tie-break")

    def tie_break_name(self, name: str | None) -> str:
        return self.classes[self.tie_break_label(name)].lower()

    def function(self, what: str) -> Callable[..., Any]:
        """The task's data function ``what`` (lazy ``"module:attr"``; a YAML task's gets ``task=self``)."""
        import functools
        import importlib

        from medvlm.errors import ConfigError

        target = self.source.get(what)
        if target is None:
            raise ConfigError(f"task {self.name!r} has no {what!r}")
        module, _, attr = target.partition(":")
        fn = getattr(importlib.import_module(module), attr)
        return fn if self.spec is None else functools.partial(fn, task=self)

    def describe(self) -> dict[str, Any]:
        """The JSON description (``medvlm tasks --json``; run.json's ``task``)."""
        return {"name": self.name, "description": self.description, "classes": list(self.classes),
                "positive": self.positive, "unit": self.unit,
                "answers": {str(i): a.name for i, a in enumerate(self.answers)},
                "parser_version": self.parser_version, "prompts": list(self.prompts),
                "cnn_model": self.cnn_model,
                **({"source": self.spec.source.kind} if self.spec is not None else {}),
                **({"answer_codes": dict(zip(self.codes, (a.name for a in self.answers), strict=True))}
                   if self.answer_digits else {})}


def choice_parser(n_codes: int, names: list[tuple[str, int]]) -> ChoiceParser:
    """A task's parser (see :class:`medvlm.vlm.parsing.ChoiceParser`)."""
    return ChoiceParser(n_codes, names=names)
