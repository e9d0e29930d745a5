"""Settings of a consistency run: :class:`ConsistencyConfig` (recorded in ``run.json``) and the
sampling settings of each series of repeats (:class:`Sampling`), explicit and recorded, defaulting to
the model's own generation defaults (:func:`model_generation_defaults`, :func:`resolve_sampling`);
:func:`decoding_for` turns one into the engine's :class:`~medvlm.vlm.types.Decoding`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from medvlm.errors import DataError
from medvlm.vlm.options import BackendOptions

if TYPE_CHECKING:  # pragma: no cover
    from medvlm.tasks.base import Task
    from medvlm.vlm.types import Decoding

#: a sampling temperature (>= 0)
Temperature = Annotated[float, Field(ge=0.0)]


class ConsistencyConfig(BackendOptions):
    """Resolved settings of one ``medvlm consistency`` run (recorded in ``run.json``; no secrets).

    The backend, model and request fields come from :class:`~medvlm.vlm.options.BackendOptions`.
    ``patients`` empty: one slice per patient of ``cohort`` (fold ``fold`` for train/val).
    ``slice_index`` None: the central tumour slice of each patient along ``orientation``.
    ``prompts``: built-in names or files (several = paraphrase robustness). ``temperatures`` empty: the
    model's own default; several = a sweep. ``top_p`` None: the model's own default. ``seed``: base
    sampling seed (request seed = seed + repeat index), None = send none. ``shots``: K labelled examples
    from the training cohort of ``fold`` before each question (:mod:`medvlm.vlm.fewshot`).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: one line, exit 2

    patients: list[str] = Field(default_factory=list)
    orientation: str | None = None  # default: the task's first orientation
    slice_index: int | None = None
    cohort: str = "test"
    fold: int = Field(0, ge=0)
    prompts: list[str] = Field(default_factory=list)  # default: the task's first prompt
    temperatures: list[Temperature] = Field(default_factory=list)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    repeats: int = Field(95, ge=1)
    tie_break: str | None = None  # a class name; default: the positive class
    shots: int = Field(0, ge=0)  # few-shot examples before each question (medvlm.vlm.fewshot)

    def for_task(self, task: Task) -> ConsistencyConfig:
        """A copy with the task's defaults filled in (orientation, prompt, modalities, tie-break)."""
        from medvlm.registry import check_choice

        if task.unit == "image":  # whole 2D images: no orientation (recorded as "image")
            from medvlm.data.images import IMAGE_ORIENTATION

            check_choice("orientation", self.orientation or IMAGE_ORIENTATION, [IMAGE_ORIENTATION])
            return self.model_copy(update={
                "orientation": IMAGE_ORIENTATION, "modalities": [],
                "prompts": [task.check_prompt(p) for p in self.prompts] or [task.default_prompt],
                "tie_break": task.tie_break_name(self.tie_break)})
        orientation = check_choice("orientation", self.orientation or task.default_orientations[0],
                                   task.orientations)
        return self.model_copy(update={
            "orientation": orientation,
            "prompts": [task.check_prompt(p) for p in self.prompts] or [task.default_prompt],
            "modalities": self.modalities or list(task.default_modalities),
            "tie_break": task.tie_break_name(self.tie_break)})


class Sampling(BaseModel):
    """The sampling settings of one series of repeats, as sent. ``temperature``/``top_p`` None = not
    chosen here: the server applies its (the model's) own default (the field is left out of the request).
    ``source`` says where each value came from."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    temperature: float | None
    top_p: float | None
    seed: int | None
    source: str


def model_generation_defaults(model: str) -> tuple[dict[str, Any], str]:
    """The model's own sampling defaults from its ``generation_config.json``: ``({"do_sample",
    "temperature", "top_p"}, where they came from)``. A local folder is read directly; a hub name through
    ``transformers.GenerationConfig.from_pretrained`` (offline cache only); without one, transformers'
    defaults (greedy)."""
    defaults = {"do_sample": False, "temperature": 1.0, "top_p": 1.0}
    path = Path(model).expanduser() / "generation_config.json"
    data: dict[str, Any] | None = None
    source = "transformers defaults (no generation_config.json)"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            source = f"{path}"
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not readable JSON ({exc})") from exc
    elif not Path(model).expanduser().exists():
        try:
            from transformers import GenerationConfig

            data = GenerationConfig.from_pretrained(model, local_files_only=True).to_dict()
            source = f"generation_config of {model}"
        except Exception:  # noqa: BLE001 - any failure means: no generation config available here
            data = None
    for key in defaults:
        if data and data.get(key) is not None:
            defaults[key] = data[key]
    return defaults, source


def resolve_sampling(config: ConsistencyConfig) -> list[Sampling]:
    """One :class:`Sampling` per temperature of the sweep (one when no ``--temperature`` is given).

    Values not given fall back to the model's own defaults:

    - ``transformers``: the model's ``generation_config.json`` (``do_sample`` false -> temperature 0,
      greedy; true -> its ``temperature`` and ``top_p``);
    - ``openai``: left to the server (None: the field is left out of the request; vLLM and Ollama then
      apply the model's generation config);
    - ``mock``: temperature 1.0, top-p 1.0 (its answers vary per repeat).
    """
    given_t = list(dict.fromkeys(float(t) for t in config.temperatures))
    if config.backend == "transformers":
        gen, where = model_generation_defaults(config.model)
        t_default = float(gen["temperature"]) if gen["do_sample"] else 0.0
        p_default: float | None = float(gen["top_p"]) if gen["do_sample"] else 1.0
        what = "model default" + ("" if gen["do_sample"] else " (do_sample false: greedy)") + f" from {where}"
    elif config.backend == "openai":
        t_default, p_default, what = None, None, "server default (not sent)"  # type: ignore[assignment]
    else:
        t_default, p_default, what = 1.0, 1.0, f"{config.backend} default"
    top_p = config.top_p if config.top_p is not None else p_default
    out = []
    for t in given_t or [t_default]:
        source = (f"temperature {'--temperature' if given_t else what}; "
                  f"top_p {'--top-p' if config.top_p is not None else what}")
        out.append(Sampling(temperature=t, top_p=top_p, seed=config.seed, source=source))
    return out


def decoding_for(sampling: Sampling, config: ConsistencyConfig) -> Decoding:
    """The engine's :class:`~medvlm.vlm.types.Decoding` for one sampling series. A value left to the
    server (None) stays None: the openai backend then leaves it out of the request, and None is a
    cache-key value of its own."""
    from medvlm.vlm.types import Decoding

    return Decoding(scoring=config.scoring, max_new_tokens=config.max_new_tokens,
                    temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed,
                    structured=config.structured, extra_body=config.extra_body)


def format_temperature(value: float | None) -> str:
    """A sampling temperature for tables and figure labels: ``"default"`` when left to the server.

    >>> format_temperature(0.7), format_temperature(None)
    ('0.7', 'default')
    """
    return "default" if value is None else f"{value:g}"


def shot_sampler(work: str | Path, config: ConsistencyConfig, task: Task, images: list[Any]) -> Any:
    """The few-shot sampler of a run (:func:`medvlm.vlm.fewshot.make_sampler`; None when ``shots`` is 0):
    examples of the images' orientation, rendered as the images are, never of an asked patient."""
    from medvlm.vlm.fewshot import make_sampler

    cohort = "--patient" if config.patients else config.cohort
    return make_sampler(work, config.shots, task=task, cohort=cohort,
                        fold=config.fold, evaluated=sorted({im.patient_id for im in images}),
                        orientations=sorted({im.orientation for im in images}), selection=task.default_slices,
                        modalities=config.modalities or list(task.default_modalities), seed=config.seed or 0)
