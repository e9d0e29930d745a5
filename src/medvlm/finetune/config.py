"""The fine-tuning configuration: one pydantic model, every field a CLI option of ``medvlm finetune``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:  # pragma: no cover
    from medvlm.tasks.base import Task

METHODS = ("lora", "qlora")
ENGINES = ("peft", "trl", "unsloth")
TARGETS = ("language", "vision", "all")

#: Hyper-parameters that may change when a run is resumed (more epochs / steps, more frequent saving,
#: merging at the end); any other difference between the checkpoint's config and the new one is refused.
RESUMABLE_FIELDS = frozenset({"epochs", "max_steps", "save_steps", "merge"})


class FinetuneConfig(BaseModel):
    """LoRA / QLoRA fine-tuning of a Llama-3.2-Vision-architecture model on the split's training cohort.

    Training examples are the slices of the training cohort of ``fold`` rendered exactly as ``eval-vlm``
    renders them, with the prompt ``prompt`` and the unit's label (its answer code) as the answer; the
    minority class
    slices are oversampled (``balance``) so both classes are seen equally often. The validation cohort of
    the same fold is scored after every epoch (mean P(true class), balanced accuracy); with
    ``select="best"`` the adapter written to the output folder is the one of the best epoch.
    One optimiser step = ``batch_size * grad_accum`` examples.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: one line, exit 2

    base_model: str = Field(description="folder (or hub id) of the base model, loadable by from_pretrained")
    method: Literal["lora", "qlora"] = "lora"
    engine: Literal["peft", "trl", "unsloth"] = "peft"
    target: Literal["language", "vision", "all"] = "language"
    rank: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="optimiser steps; overrides epochs when set")
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    seed: int = 0
    fold: int = Field(0, ge=0)
    orientations: list[str] | None = Field(None, description="default: the task's")
    prompt: str | None = Field(None, description="default: the task's first prompt")
    slices: str | None = Field(None, description="as in eval-vlm: tumour, all or central:K (default: the "
                               "task's)")
    modalities: list[str] | None = Field(None, description="as in eval-vlm (default: the task's)")
    max_slices_per_patient: int | None = Field(None, ge=1, description="per patient and orientation")
    max_val_slices_per_patient: int | None = Field(None, ge=1, description="default: max_slices_per_patient")
    balance: bool = True
    validate_each_epoch: bool = True
    select: Literal["best", "last"] = "best"
    select_metric: Literal["val_p_true", "val_balanced_accuracy"] = "val_p_true"
    save_steps: int = Field(50, ge=1, description="checkpoint every N optimiser steps (and each epoch end)")
    merge: bool = False
    gradient_checkpointing: bool = False

    @field_validator("orientations")
    @classmethod
    def _check_orientations(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("at least one orientation is needed")
        return None if value is None else list(dict.fromkeys(value))

    def for_task(self, task: Task) -> FinetuneConfig:
        """A copy with the task's defaults filled in and checked against the task (ConfigError)."""
        orientations, modalities = task.views(self.orientations, self.modalities, slices=self.slices)
        return self.model_copy(update={
            "orientations": orientations, "prompt": task.check_prompt(self.prompt or task.default_prompt),
            "slices": self.slices or task.default_slices, "modalities": modalities})
