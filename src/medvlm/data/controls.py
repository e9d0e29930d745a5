"""Image controls: what a VLM is shown instead of (or on top of) the real slice.

A control answers "does the model look at the image at all?": if its answers do not change when the
image is gone, blank, noise or the tumour is painted over, its grading does not come from the image.
``eval-vlm --image VARIANT`` picks one (:data:`IMAGE_VARIANTS`):

- ``real``: the slice as rendered (:mod:`medvlm.data.slices`);
- ``none``: no image at all, the prompt alone (the request is a text-only message);
- ``blank``: one uniform black image (every pixel 0) of the slice's size;
- ``noise``: uniform 8-bit noise of the slice's size, seeded by patient, orientation, slice index and
  the run's ``--seed`` (:func:`derived_seed`), so a rerun renders the same bytes;
- ``tumour-masked``: the slice with its tumour (mask ``seg > 0`` of the same canonical slice) filled
  with the median of the rest of the brain in that slice (brain = non-zero pixels outside the tumour),
  every other pixel unchanged (:func:`fill_tumour`).

``eval-vlm --artifact KIND:SEVERITY`` corrupts each modality's canonical 3D volume with a TorchIO
MRI artifact before slicing (:func:`apply_artifact`; the window is then taken from the corrupted
volume). Severity 0..1 scales the documented default range of the TorchIO transform
(:data:`ARTIFACTS`); severity 0 leaves the volume untouched. The random draw is seeded by patient and
``--seed`` only, so every modality of a patient gets the same draw and a higher severity scales that
same draw.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from medvlm.errors import ConfigError
from medvlm.registry import check_choice

IMAGE_VARIANTS = ("real", "none", "blank", "noise", "tumour-masked")

#: artifact -> (TorchIO transform, its keyword arguments at severity s, as text for the docs)
ARTIFACTS: dict[str, tuple[str, str]] = {
    "motion": ("RandomMotion", "degrees=10*s, translation=10*s (mm), num_transforms=2"),
    "ghosting": ("RandomGhosting", "num_ghosts=(4, 10), axes=(0, 1, 2), intensity=(0.5*s, 1.0*s)"),
    "spike": ("RandomSpike", "num_spikes=1, intensity=(1*s, 3*s)"),
    "bias-field": ("RandomBiasField", "coefficients=0.5*s, order=3"),
}


@dataclass(frozen=True)
class Artifact:
    """An MRI artifact: ``kind`` (a key of :data:`ARTIFACTS`) and ``severity`` in [0, 1]."""

    kind: str
    severity: float

    @property
    def spec(self) -> str:
        """``"motion:0.5"``: the option's value, as run.json records it."""
        return f"{self.kind}:{self.severity:g}"


def check_image(value: str) -> str:
    """``--image``: one of :data:`IMAGE_VARIANTS` (ConfigError with a "did you mean" otherwise)."""
    return check_choice("--image", value, IMAGE_VARIANTS)


def parse_artifact(spec: str | None) -> Artifact | None:
    """``"KIND:SEVERITY"`` -> :class:`Artifact` (None for None or ""); ConfigError naming the option.

    >>> parse_artifact("bias-field:0.25")
    Artifact(kind='bias-field', severity=0.25)
    >>> parse_artifact("motion:2")
    Traceback (most recent call last):
    ...
    medvlm.errors.ConfigError: --artifact motion:2: the severity must be a number from 0 to 1
    """
    if spec is None or not str(spec).strip():
        return None
    kind, sep, severity = str(spec).strip().partition(":")
    if not sep:
        raise ConfigError(f"--artifact {spec}: give KIND:SEVERITY, e.g. motion:0.5 (kinds {list(ARTIFACTS)})")
    check_choice("--artifact", kind.strip().lower(), list(ARTIFACTS))
    try:
        value = float(severity)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"--artifact {spec}: the severity must be a number from 0 to 1")
    return Artifact(kind.strip().lower(), value)


def check_controls(image: str, artifact: str | None) -> tuple[str, Artifact | None]:
    """Both options checked together: an artifact needs an image it can show (real or tumour-masked)."""
    image = check_image(image)
    parsed = parse_artifact(artifact)
    if parsed is not None and image not in ("real", "tumour-masked"):
        raise ConfigError(f"--artifact {parsed.spec} has no effect with --image {image}; "
                          "use it with --image real or tumour-masked")
    if parsed is not None and parsed.severity > 0:
        from medvlm.errors import require

        require("torchio", "controls")
    return image, parsed


def derived_seed(*parts: Any) -> int:
    """A 63-bit seed from any JSON-able parts (stable across runs, processes and platforms).

    >>> derived_seed("noise", "P1", "axial", 3, 0) == derived_seed("noise", "P1", "axial", 3, 0)
    True
    """
    digest = hashlib.sha256(json.dumps(list(parts), default=str).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _transform(artifact: Artifact) -> Any:
    import torchio as tio

    s = artifact.severity
    if artifact.kind == "motion":
        return tio.RandomMotion(degrees=10.0 * s, translation=10.0 * s, num_transforms=2)
    if artifact.kind == "ghosting":
        return tio.RandomGhosting(num_ghosts=(4, 10), axes=(0, 1, 2), intensity=(0.5 * s, 1.0 * s))
    if artifact.kind == "spike":
        # (1, 1): exactly one spike; TorchIO reads a bare 1 as the range (0, 1), no spike in half the draws
        return tio.RandomSpike(num_spikes=(1, 1), intensity=(1.0 * s, 3.0 * s))
    return tio.RandomBiasField(coefficients=0.5 * s, order=3)


def apply_artifact(volume: np.ndarray, zooms: tuple[float, float, float], artifact: Artifact | None,
                   *, seed: int) -> np.ndarray:
    """``volume`` (canonical ``(X, Y, Z)``, voxel sizes ``zooms`` in mm) with ``artifact`` applied by
    TorchIO, the random draw seeded by ``seed`` (torch's global generator is left as it was).

    None or severity 0: the volume itself, untouched. Returns float32 of the same shape.
    """
    if artifact is None or artifact.severity == 0:
        return volume
    from medvlm.errors import require

    require("torchio", "controls")
    import torch
    import torchio as tio

    affine = np.diag([*(float(z) for z in zooms), 1.0])
    image = tio.ScalarImage(tensor=torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None],
                            affine=affine)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = _transform(artifact)(image)
    return np.asarray(out.data[0].numpy(), dtype=np.float32)


def blank_pixels(shape: tuple[int, int]) -> np.ndarray:
    """A uniform black 8-bit image of ``shape`` (rows, columns)."""
    return np.zeros(shape, dtype=np.uint8)


def noise_pixels(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Uniform 8-bit noise of ``shape`` (rows, columns), the same for the same ``seed``."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def fill_tumour(pixels: np.ndarray, tumour: np.ndarray) -> np.ndarray:
    """``pixels`` (8-bit display plane) with the ``tumour`` pixels set to the median of the brain
    around them (the non-zero pixels outside the tumour; 0 without any), rounded half up; the other
    pixels unchanged.

    >>> fill_tumour(np.array([[0, 10, 20], [30, 255, 255]], np.uint8),
    ...             np.array([[0, 0, 0], [0, 1, 1]], bool)).tolist()
    [[0, 10, 20], [30, 20, 20]]
    """
    out = pixels.copy()
    if not tumour.any():
        return out
    brain = pixels[(pixels > 0) & ~tumour]
    value = int(np.floor(np.median(brain) + 0.5)) if brain.size else 0
    out[tumour] = value
    return out
