"""CNN models by name: ``small3d`` (the study's network), ``densenet121``, ``resnet18`` (MONAI, 3D), and
``densenet2d``, ``resnet2d`` (MONAI, 2D: slice-level tasks).

This module does not import torch (the registry targets are lazy), so listing names is free.
Every 3D model maps ``(B, 4, D, H, W)`` float32 volumes, every 2D model ``(B, 4, H, W)`` slices, to
logits ``(B, 1)``; ``sigmoid(logit)`` = P(positive class, label 1). For a task with K > 2 classes the
same networks are built with K outputs (``n_outputs``): logits ``(B, K)``, ``softmax`` = the class
probabilities (:mod:`medvlm.cnn.multiclass`).

>>> MODELS.names()
['densenet121', 'densenet2d', 'resnet18', 'resnet2d', 'small3d']
>>> try:
...     MODELS.get("smal3d")
... except Exception as exc:
...     print(type(exc).__name__, str(exc)[-23:])
ConfigError Did you mean 'small3d'?
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from medvlm.errors import ConfigError
from medvlm.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

#: name -> factory(input_shape[, n_outputs]) -> nn.Module. Register new models here (one place only).
MODELS = Registry("model")
MODELS.register("small3d", "medvlm.cnn._nets:small3d")
MODELS.register("densenet121", "medvlm.cnn._nets:densenet121")
MODELS.register("resnet18", "medvlm.cnn._nets:resnet18")
MODELS.register("densenet2d", "medvlm.cnn._nets:densenet2d")
MODELS.register("resnet2d", "medvlm.cnn._nets:resnet2d")


def model_names() -> list[str]:
    """Names accepted by ``train-cnn --model``."""
    return MODELS.names()


def check_input_shape(name: str, input_shape: Sequence[int], n_outputs: int = 1) -> tuple[int, ...]:
    """Check model ``name`` takes volumes of ``input_shape = (4, D, H, W)`` (and returns ``n_outputs``
    logits); return the shape as ints.

    Raises :class:`ConfigError` for an unknown name (with the list and a "did you mean") or a shape the
    network cannot take (found by a forward pass on the meta device, which allocates nothing).
    """
    import torch

    factory = MODELS.get(name)
    shape = tuple(int(v) for v in input_shape)
    if len(shape) not in (3, 4):
        raise ConfigError(f"model {name!r}: input shape must be (channels, D, H, W) or (channels, H, W), "
                          f"got {shape}")
    try:
        with torch.device("meta"):
            probe = _make(factory, shape, n_outputs)
        probe.eval()
        with torch.no_grad():
            out = probe(torch.zeros((2, *shape), device="meta"))
    except (RuntimeError, ValueError) as exc:
        what = "volumes" if len(shape) == 4 else "2D slices"
        raise ConfigError(
            f"model {name!r} cannot take {what} of shape {'x'.join(map(str, shape))} (too small, or a "
            f"network for other dimensions?): {str(exc).splitlines()[0]}"
        ) from exc
    if tuple(out.shape) != (2, n_outputs):
        raise ConfigError(f"model {name!r} returns shape {tuple(out.shape)[1:]}, expected ({n_outputs},)")
    return shape  # type: ignore[return-value]


def _make(factory: Any, shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """``factory(shape)`` for one logit (the binary network, built exactly as before K-class support),
    ``factory(shape, n_outputs)`` otherwise."""
    return factory(shape) if n_outputs == 1 else factory(shape, n_outputs)


def build_model(name: str, input_shape: Sequence[int], n_outputs: int = 1) -> nn.Module:
    """Model ``name`` for volumes of shape ``input_shape = (4, D, H, W)``: ``(B, 4, D, H, W)`` -> ``(B, 1)``,
    or ``(B, n_outputs)`` logits for a K-class task (``n_outputs`` = K > 2).

    Raises :class:`ConfigError` as :func:`check_input_shape` does. Parameters are initialised from the
    global torch RNG (seed it first).
    """
    shape = check_input_shape(name, input_shape, n_outputs)
    return _make(MODELS.get(name), shape, n_outputs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
