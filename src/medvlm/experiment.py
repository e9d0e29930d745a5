"""The whole study as one validated configuration: ``medvlm run EXPERIMENT.yaml`` and ``medvlm demo``.

An :class:`ExperimentConfig` names every stage of the study: the data (a BraTS 2020 folder or a
synthetic cohort), preprocessing, the split, one or more CNNs, one or more VLM evaluations, consistency
runs, LoRA/QLoRA fine-tuning (each followed by an evaluation of the fine-tuned model exactly like the
general one), calibrated arms and the report. Each run section takes the matching command's option names
(:mod:`medvlm.config_keys`; the field names of :class:`medvlm.cnn.config.CNNConfig`,
:class:`medvlm.vlm.evaluate.VLMEvalConfig`, :class:`medvlm.finetune.config.FinetuneConfig` and
:class:`medvlm.consistency.config.ConsistencyConfig` stay accepted) plus a ``name``. Unknown keys are
rejected, all in one message, each with a "did you mean".

``model: tiny`` (or ``base_model: tiny``) stands for the tiny Llama-3.2-Vision-architecture model that
``medvlm make-tiny-vlm`` writes (trained only to answer in the study's format, with no grade
information): a stand-in for a real VLM.

Output layout under ``out``::

    data/                 synthetic cohort (when ``data.synthetic``)
    work/                 manifest.csv, volumes/, splits.json
    models/tiny-vlm/      the stand-in VLM (when a run names ``tiny``)
    runs/<name>/          one folder per CNN, VLM, consistency and fine-tuning run
    report.html           the report
    experiment.json       the resolved config and one record per stage (used to skip finished stages)
"""

from __future__ import annotations

import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medvlm.cnn.config import CNNConfig
from medvlm.config_keys import option_name
from medvlm.consistency.config import ConsistencyConfig
from medvlm.errors import ConfigError
from medvlm.finetune.config import FinetuneConfig
from medvlm.registry import did_you_mean
from medvlm.vlm.evaluate import VLMEvalConfig

TINY_MODEL = "tiny"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: one line, exit 2


class SyntheticData(_Strict):
    """A synthetic cohort in the BraTS 2020 layout (``medvlm synth``); ``kind: cxr``: synthetic chest
    radiographs with their task file ``cxr.yaml`` (``medvlm synth --task cxr``; ``lgg_fraction`` unused)."""

    kind: Literal["brats", "cxr"] = "brats"
    patients: int = Field(40, ge=4)
    lgg_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    seed: int = 0
    size: Literal["small", "medium", "full"] = "medium"


class DataSection(_Strict):
    """Where the images come from: ``path`` (BraTS training folder or its parent) or ``synthetic``."""

    path: str | None = None
    synthetic: SyntheticData | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        if (self.path is None) == (self.synthetic is None):
            raise ValueError("give exactly one of 'path' (a BraTS folder) or 'synthetic'")
        return self


class PrepareSection(_Strict):
    """``medvlm prepare`` options."""

    shape: tuple[int, int, int] = (95, 128, 128)
    margin_mm: float = Field(10.0, ge=0)
    workers: int = Field(1, ge=1)


class SplitSection(_Strict):
    """``medvlm split`` options."""

    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    folds: int = Field(5, ge=2)
    seed: int = 0


class CNNRun(CNNConfig):
    """One ``train-cnn`` run: ``name`` plus the fields of :class:`CNNConfig`."""

    name: str = Field(pattern=_NAME_PATTERN)


class VLMRun(VLMEvalConfig):
    """One ``eval-vlm`` run: ``name`` plus the fields of :class:`VLMEvalConfig`."""

    name: str = Field(pattern=_NAME_PATTERN)


class ConsistencyRun(ConsistencyConfig):
    """One ``consistency`` run: ``name`` plus the fields of :class:`ConsistencyConfig`.

    ``pick: CLASS`` chooses the patient for you: the first test patient of that class, a class name of
    the task (patient-level tasks; the study asked about one image of each grade).
    """

    name: str = Field(pattern=_NAME_PATTERN)
    pick: str | None = None


class FinetuneRun(FinetuneConfig):
    """One ``finetune`` run, then an evaluation of the adapter exactly like a general VLM run.

    ``evaluate`` holds :class:`VLMEvalConfig` fields for that evaluation (``model`` and ``adapter`` are
    filled in); ``evaluate: null`` skips it.
    """

    name: str = Field(pattern=_NAME_PATTERN)
    evaluate: dict[str, Any] | None = Field(default_factory=dict)

    @field_validator("evaluate")
    @classmethod
    def _check_evaluate(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            bad = set(value) & {"model", "adapter", "backend"}
            if bad:
                raise ValueError(f"{sorted(bad)} are set by the fine-tuning run itself")
            VLMEvalConfig(model="placeholder", **value)  # typos fail here, with pydantic's message
        return value


class CalibrateRun(_Strict):
    """A calibrated arm (``medvlm calibrate``): the test-cohort predictions of run ``run`` (a ``vlm`` run,
    a fine-tuning run's ``<name>-eval`` or a ``cnn`` run), calibrated on the validation cohort of
    ``fold``. For a VLM run that evaluation is ``<run>-val<fold>`` (the same options, ``cohort: val``),
    made when missing; a CNN run's own out-of-fold val rows are used as they are."""

    name: str = Field(pattern=_NAME_PATTERN)
    run: str
    method: Literal["temperature", "platt", "isotonic", "none"] = "temperature"
    threshold: Literal["youden", "balanced"] | float = "youden"
    fold: int = Field(0, ge=0)
    abstain_below: float | None = Field(None, ge=0.5, le=1.0)
    bootstrap: int = Field(0, ge=0)

    @field_validator("threshold")
    @classmethod
    def _threshold_range(cls, value: Any) -> Any:
        if not isinstance(value, str) and not 0.0 <= float(value) <= 1.0:
            raise ValueError("threshold must be youden, balanced or a number in [0, 1]")
        return value


class ReportSection(_Strict):
    """The report: its file name under ``out`` and its title."""

    file: str = "report.html"
    title: str = "medvlm: general VLM vs fine-tuned VLM vs CNN"


class ExperimentConfig(_Strict):
    """The whole study. Paths in the YAML file are relative to the file's folder."""

    name: str = "experiment"
    out: str = "medvlm-run"
    description: str | None = None
    task: str = "brats-grading"  # a registered task (`medvlm tasks`); every stage reads it from WORK
    data: DataSection
    prepare: PrepareSection = Field(default_factory=PrepareSection)
    split: SplitSection = Field(default_factory=SplitSection)
    cnn: list[CNNRun] = Field(default_factory=list)
    vlm: list[VLMRun] = Field(default_factory=list)
    consistency: list[ConsistencyRun] = Field(default_factory=list)
    finetune: list[FinetuneRun] = Field(default_factory=list)
    calibrate: list[CalibrateRun] = Field(default_factory=list)
    report: ReportSection = Field(default_factory=ReportSection)

    @model_validator(mode="before")
    @classmethod
    def _shots_sweeps(cls, data: Any) -> Any:
        """``shots: [0, 2, 4]`` in a vlm or consistency run: one run per K (``<name>-shots<K>``)."""
        from medvlm.vlm.fewshot import expand_shots_sweeps

        return expand_shots_sweeps(data)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from medvlm.errors import MedVLMError
        from medvlm.tasks import get_task

        if str(value).lower().endswith((".yaml", ".yml")):  # a task file: read by load_experiment
            return value
        try:
            return get_task(value).name
        except MedVLMError as exc:  # a ValueError names the file and the key
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _fits_the_task(self) -> ExperimentConfig:
        """Class names, prompts and picks that the task must know, checked before any stage runs."""
        from medvlm.errors import MedVLMError
        from medvlm.experiment_task import check_runs_fit_task, is_task_file
        from medvlm.tasks import get_task

        if is_task_file(self.task):  # read and checked when the file loads (experiment_task.check_task)
            return self
        try:
            check_runs_fit_task(self, get_task(self.task))
        except MedVLMError as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> ExperimentConfig:
        names = [r.name for r in [*self.cnn, *self.vlm, *self.consistency, *self.finetune, *self.calibrate]]
        names += [f"{r.name}-eval" for r in self.finetune if r.evaluate is not None]
        vlm_names = {r.name for r in self.vlm} | {f"{r.name}-eval" for r in self.finetune if r.evaluate}
        names += sorted({f"{r.run}-val{r.fold}" for r in self.calibrate if r.run in vlm_names})
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"run names must be unique; repeated: {dupes}")
        if not names:
            raise ValueError("nothing to run: give at least one cnn, vlm, consistency or finetune run")
        scored = vlm_names | {r.name for r in self.cnn}
        for r in self.calibrate:
            if r.run not in scored:
                hint = did_you_mean(r.run, sorted(scored))
                raise ValueError(f"calibrate run {r.name!r}: run {r.run!r} is not a vlm, cnn or fine-tuning "
                                 f"evaluation run of this file.{hint}")
            if r.fold >= self.split.folds:
                raise ValueError(f"calibrate run {r.name!r}: fold {r.fold} but the split has "
                                 f"{self.split.folds} folds (0 to {self.split.folds - 1})")
        return self


# --------------------------------------------------------------------------------------- loading
def _annotation_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``X``, ``list[X]``, ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _annotation_model(arg)
            if found is not None:
                return found
    return None


def _unknown_key(loc: list[str]) -> str:
    """``'vlm.0.modle'. Did you mean 'model'?`` for one unknown key."""
    model: type[BaseModel] | None = ExperimentConfig
    for part in loc[:-1]:
        if model is None or part.isdigit():
            continue
        field = model.model_fields.get(part)
        model = _annotation_model(field.annotation) if field else None
    section = "vlm" if "evaluate" in loc[:-1] else (loc[0] if loc else "")
    choices = sorted({option_name(section, f) for f in model.model_fields}) if model else []
    where = ".".join(loc) or "(top level)"
    hint = did_you_mean(loc[-1], choices)
    return f"{where!r}.{hint or ' Allowed: ' + ', '.join(choices)}"


def _explain(exc: ValidationError, source: str) -> ConfigError:
    """One line: every unknown key (each with a "did you mean"), else the first validation error."""
    errors = exc.errors()
    unknown = [[str(p) for p in e["loc"]] for e in errors if e["type"] == "extra_forbidden"]
    if len(unknown) == 1:
        return ConfigError(f"{source}: unknown key {_unknown_key(unknown[0])}")
    if unknown:
        return ConfigError(f"{source}: {len(unknown)} unknown keys: "
                           + "; ".join(_unknown_key(loc) for loc in unknown))
    err = errors[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    message = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
    if not err["loc"] and re.match(r"^[\w.]+: ", message):  # a whole-file check that names its key
        return ConfigError(f"{source}: {message}")
    return ConfigError(f"{source}: {where}: {message}")


def parse_experiment(data: Any, *, source: str = "experiment") -> ExperimentConfig:
    """Validate a dict (as read from YAML) into an :class:`ExperimentConfig`; ConfigError on a mistake."""
    from medvlm.config_keys import normalise_sections

    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (data, cnn, vlm, ...)")
    data = normalise_sections(data, source)  # the commands' option names -> the config fields
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, source) from exc


def read_yaml(path: Path) -> Any:
    """A config file's YAML: UTF-8, no anchors or aliases (a "billion laughs" file cannot blow up), no
    duplicate keys (a second ``vlm:`` would silently replace the first). ConfigError naming the file,
    the line and what is wrong."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
                mark = self.peek_event().start_mark
                raise ConfigError(f"{path}: line {mark.line + 1}: YAML anchors and aliases (&, *) are not "
                                  "accepted in a medvlm config; write the values out")
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise ConfigError(f"{path}: line {key_node.start_mark.line + 1}: key {key!r} appears "
                                      f"twice in one section (first on line {seen[key] + 1})")
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read (thousands of levels)") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise ConfigError(f"{path}: not valid YAML ({first})") from exc


def load_experiment(path: str | Path) -> tuple[ExperimentConfig, Path]:
    """Read and validate ``EXPERIMENT.yaml``; returns the config and the folder its paths are relative to."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such experiment file")
    from medvlm.experiment_task import check_task

    config, base = parse_experiment(read_yaml(path), source=str(path)), path.resolve().parent
    check_task(config, base, source=str(path))
    return config, base


def check_devices(config: ExperimentConfig, *, source: str = "experiment") -> None:
    """Every device a run asks for exists here (``cuda``, ``cuda:N``, ``mps``): a ConfigError naming the
    run's key, before any stage runs (``run --check`` validates the file only, for another machine)."""
    from medvlm.cnn.loop import resolve_device as cnn_device
    from medvlm.vlm.hf import resolve_device as vlm_device

    wanted = [(f"cnn.{i}.device", r.device, cnn_device) for i, r in enumerate(config.cnn)]
    for section in ("vlm", "consistency"):
        wanted += [(f"{section}.{i}.device", r.device, vlm_device)
                   for i, r in enumerate(getattr(config, section)) if r.backend == "transformers"]
    wanted += [(f"finetune.{i}.evaluate.device", str(r.evaluate.get("device", "auto")), vlm_device)
               for i, r in enumerate(config.finetune) if r.evaluate is not None]
    for where, device, resolve in wanted:
        if device not in ("auto", "cpu"):
            try:
                resolve(device)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {where}: {exc}") from None


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (what a stage's result depends on)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def demo_config(*, patients: int = 40, seed: int = 0, size: str = "medium",
                workers: int = 1) -> ExperimentConfig:
    """The embedded defaults of ``medvlm demo`` (the same study as ``examples/demo.yaml``).

    Sized for a few minutes on 2 CPU cores: a small synthetic cohort, a 3-fold CNN at 48x64x64, the
    tiny stand-in VLM with log-prob scoring on every tumour slice of three orientations, the study's
    consistency test (one HGG and one LGG image, 95 repeats, sampled at Llama-3.2-Vision's defaults:
    temperature 0.6, top-p 0.9), a LoRA fine-tune on a few slices per patient and its evaluation, and
    the general VLM with a temperature and threshold fitted on the validation cohort of fold 0, and two
    controls of the general VLM (the prompt without an image, and TorchIO motion at severity 0.5).
    """
    return parse_experiment({
        "name": "demo",
        "description": "The study on a synthetic cohort with a tiny stand-in VLM (trained only to answer in "
                       "the study's format, mostly HGG; its answers carry no grade information): it shows "
                       "the pipeline, not a result.",
        "data": {"synthetic": {"patients": patients, "lgg_fraction": 0.25, "seed": seed, "size": size}},
        "prepare": {"shape": [48, 64, 64], "workers": workers},
        "split": {"test_fraction": 0.25, "folds": 3, "seed": seed},
        "cnn": [{"name": "cnn-small3d", "model": "small3d", "epochs": 12, "lr": 3e-4, "batch_size": 4,
                 "fold": "all", "bootstrap": 500}],
        "vlm": [{"name": "vlm-zero-shot", "backend": "transformers", "model": TINY_MODEL,
                 "scoring": "logprobs", "orientations": ["axial", "coronal", "sagittal"],
                 "slices": "tumour", "n_boot": 500, "save_images": 6},
                # controls of vlm-zero-shot: does it look at the image?
                {"name": "vlm-zero-shot-no-image", "backend": "transformers", "model": TINY_MODEL,
                 "scoring": "logprobs", "orientations": ["axial", "coronal", "sagittal"],
                 "slices": "tumour", "n_boot": 500, "image": "none"},
                {"name": "vlm-zero-shot-motion-0.5", "backend": "transformers", "model": TINY_MODEL,
                 "scoring": "logprobs", "orientations": ["axial", "coronal", "sagittal"],
                 "slices": "tumour", "n_boot": 500, "artifact": "motion:0.5"}],
        "consistency": [
            {"name": "consistency-hgg", "backend": "transformers", "model": TINY_MODEL, "pick": "hgg",
             "repeats": 95, "temperatures": [0.6], "top_p": 0.9, "max_new_tokens": 24},
            {"name": "consistency-lgg", "backend": "transformers", "model": TINY_MODEL, "pick": "lgg",
             "repeats": 95, "temperatures": [0.6], "top_p": 0.9, "max_new_tokens": 24},
        ],
        "finetune": [{"name": "vlm-lora", "base_model": TINY_MODEL, "method": "lora", "epochs": 3,
                      "lr": 2e-3, "batch_size": 8, "max_slices_per_patient": 4, "slices": "tumour",
                      "evaluate": {"scoring": "logprobs", "slices": "tumour", "n_boot": 500}}],
        "calibrate": [{"name": "vlm-zero-shot-calibrated", "run": "vlm-zero-shot", "method": "temperature",
                       "threshold": "youden", "bootstrap": 500}],
    }, source="demo defaults")
