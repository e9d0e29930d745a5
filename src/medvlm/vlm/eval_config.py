"""``eval-vlm``'s settings: :class:`VLMEvalConfig` (recorded in ``run.json``) and :func:`validate_config`,
which checks them against the work folder's task before any work (ConfigError naming the option).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field, field_validator

from medvlm.errors import ConfigError
from medvlm.registry import check_choice
from medvlm.vlm.backends import BACKENDS
from medvlm.vlm.options import BackendOptions
from medvlm.vlm.prompts import Prompt, load_prompt
from medvlm.vlm.types import Decoding

if TYPE_CHECKING:
    from medvlm.tasks.base import Task


class VLMEvalConfig(BackendOptions):
    """Resolved settings of one ``eval-vlm`` run (recorded in ``run.json``; no secrets).

    The backend, model and request fields come from :class:`~medvlm.vlm.options.BackendOptions`.
    ``temperature``/``top_p`` None: the model's / server's own default. ``shots``: K labelled examples of
    the training cohort of ``fold`` before each question (:mod:`medvlm.vlm.fewshot`; 0 = zero-shot).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: one line, exit 2

    orientations: list[str] | None = None  # default: the task's
    prompt: str | None = None  # default: the task's first prompt
    cohort: str = "test"
    fold: int = Field(0, ge=0)
    slices: str | None = None  # default: the task's
    repeats: int = Field(1, ge=1)
    reducer: str | None = None  # default: majority (generate) / mean_prob (logprobs)
    tie_break: str | None = None  # a class name; default: the positive class
    temperature: float | None = Field(0.0, ge=0)
    top_p: float | None = Field(1.0, gt=0, le=1)
    n_boot: int = Field(1000, ge=0)
    boot_seed: int = 0
    image: str = "real"  # real | none | blank | noise | tumour-masked (medvlm.data.controls)
    artifact: str | None = None  # KIND:SEVERITY, e.g. motion:0.5
    shots: int = Field(0, ge=0)  # few-shot examples per question, from the training cohort of fold
    save_images: int = Field(0, ge=0)  # N inputs, byte for byte, to RUN/images/ (medvlm.vlm.saved_images)

    @field_validator("orientations")
    @classmethod
    def _orientations(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("give at least one orientation")
        return None if value is None else list(dict.fromkeys(value))

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        from pydantic_core import PydanticCustomError

        from medvlm.data.controls import check_image

        try:
            return check_image(value)
        except ConfigError as exc:  # the message as is (no "Value error, " in front)
            raise PydanticCustomError("image", str(exc).replace("The '--image' parameter", "it")) from None

    @field_validator("artifact")
    @classmethod
    def _artifact(cls, value: str | None) -> str | None:
        from pydantic_core import PydanticCustomError

        from medvlm.data.controls import parse_artifact

        try:
            parsed = parse_artifact(value)
        except ConfigError as exc:
            message = str(exc).replace(f"--artifact {value}: ", "").replace("The '--artifact' parameter",
                                                                           "the kind")
            if "Got " not in message:
                message += f"; got {value!r}"
            raise PydanticCustomError("artifact", message) from None
        return parsed.spec if parsed else None

    def for_task(self, task: Task) -> VLMEvalConfig:
        """A copy with every task default filled in and checked against the task (ConfigError)."""
        orientations, modalities = task.views(self.orientations, self.modalities, slices=self.slices)
        if task.unit != "patient" and self.slices not in (None, task.default_slices):
            raise ConfigError(f"--slices {self.slices}: {task.name} asks about its labelled {task.unit}s "
                              "(WORK/units.csv); --slices selects slices for patient-level tasks")
        return self.model_copy(update={
            "orientations": orientations, "modalities": modalities,
            "prompt": task.check_prompt(self.prompt or task.default_prompt),
            "slices": self.slices or task.default_slices, "tie_break": task.tie_break_name(self.tie_break)})

    def resolved_reducer(self) -> str:
        return self.reducer or ("mean_prob" if self.scoring == "logprobs" else "majority")

    def decoding(self) -> Decoding:
        return Decoding(scoring=self.scoring, max_new_tokens=self.max_new_tokens,
                        temperature=self.temperature,
                        top_p=self.top_p, seed=self.seed, structured=self.structured,
                        extra_body=self.extra_body)


def _check_adapter_task(adapter: str | None, task: Task) -> None:
    """Refuse an adapter that ``medvlm finetune`` trained for another task (its finetune_config.json)."""
    import json

    if not adapter:
        return
    record = Path(adapter) / "finetune_config.json"
    try:
        trained = json.loads(record.read_text(encoding="utf-8")).get("task") if record.is_file() else None
    except (OSError, ValueError, AttributeError):
        trained = None
    if trained and trained != task.name:
        raise ConfigError(f"--adapter {adapter}: fine-tuned for task {trained!r}, but the work folder is "
                          f"{task.name!r}; fine-tune on this work folder first")


def validate_config(config: VLMEvalConfig, task: Task | str | None = None
                    ) -> tuple[VLMEvalConfig, Prompt, Decoding, str]:
    """Check options before any work (ConfigError naming the option); returns the config with the
    task's defaults filled in, the prompt, the decoding settings and the reducer."""
    from medvlm.aggregate import REDUCERS
    from medvlm.data.controls import check_controls
    from medvlm.data.slices import parse_modalities, parse_selection
    from medvlm.tasks import get_task

    check_choice("backend", config.backend, BACKENDS.names())
    task = get_task(task)
    config = config.for_task(task)
    _check_adapter_task(config.adapter, task)
    if task.unit == "image":  # one whole image per unit: no slices, modalities or MRI artifacts
        if config.artifact:
            raise ConfigError(f"--artifact {config.artifact}: MRI artifacts apply to volumes; {task.name} "
                              "asks about 2D images")
        if config.image == "tumour-masked":
            raise ConfigError(f"--image tumour-masked needs a tumour mask; {task.name} asks about 2D images "
                              "(real, none, blank or noise)")
    else:
        parse_selection(config.slices)  # type: ignore[arg-type]
        parse_modalities(config.modalities)
    image, artifact = check_controls(config.image, config.artifact)
    config = config.model_copy(update={"image": image, "artifact": artifact.spec if artifact else None})
    reducer = config.resolved_reducer()
    REDUCERS.get(reducer)
    if reducer == "mean_prob" and config.scoring != "logprobs":
        raise ConfigError("--reducer mean_prob needs class probabilities: use --scoring logprobs")
    return config, load_prompt(config.prompt), config.decoding(), reducer  # type: ignore[arg-type]
