"""The options of ``medvlm train-cnn``: :class:`CNNConfig`, built and checked by :func:`make_config`.

The bottom of :mod:`medvlm.cnn`'s training modules: everything else (the loop, checkpoints, folds,
orchestration) takes a :class:`CNNConfig`, and this module imports none of them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medvlm.errors import ConfigError
from medvlm.registry import check_choice

#: Validation metrics a run can select its best checkpoint by (``val_loss`` lower is better).
SELECT_METRICS = ("val_auc", "val_loss", "val_balanced_accuracy", "val_accuracy", "val_f1", "val_mcc")


class CNNConfig(BaseModel):
    """Options of ``train-cnn`` (defaults: the study's setting where it states one)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: one line, exit 2

    model: str | None = None  # default: the task's network (small3d for brats-grading)
    epochs: int = Field(20, ge=1)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(4, ge=1)
    fold: int | Literal["all"] = 0
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="DataLoader worker processes; auto: 0 on CPU, 2 on CUDA (see resolve_workers)")
    augment: bool = False
    oversample: bool = True
    early_stopping: int | None = Field(None, ge=1, description="patience in epochs; None: off")
    select_metric: str = "val_auc"
    checkpoint: Literal["best", "last"] = "best"
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["none", "plateau"] = "none"
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for metric CIs; 0: none")
    amp: bool = True
    progress: bool = True


def make_config(**options: Any) -> CNNConfig:
    """:class:`CNNConfig` from keyword options; an invalid value raises a one-line ConfigError."""
    try:
        config = CNNConfig(**options)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise ConfigError(f"train-cnn option {where!r}: {err['msg']} (got {err.get('input')!r})") from None
    check_choices(config)
    return config


def check_choices(config: CNNConfig) -> None:
    """A ConfigError (with a did-you-mean) for an unknown ``select_metric`` or ``model``."""
    check_choice("select_metric", config.select_metric, SELECT_METRICS)
    from medvlm.cnn.models import MODELS

    if config.model is not None:
        check_choice("model", config.model, MODELS.names())
