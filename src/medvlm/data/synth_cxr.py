"""``medvlm synth OUT --task cxr``: a synthetic 2D cohort of chest-radiograph-like images.

Each image: a dark background, the body (a bright ellipse), two dark lung fields, the mediastinum and
heart between them, ribs (bright arcs across the lungs) and noise. Class ``lesion`` (label 1): one
bright round opacity inside a lung; ``no-lesion`` (label 0): none. About a third of the patients have
two or three images (their labels drawn independently), so the patient grouping of the split matters.

Written in the ``image-csv`` layout: ``OUT/images/*.png`` (8-bit), a few 16-bit DICOM files when pydicom
is installed (windowed; the first of them ``MONOCHROME1``, its pixels inverted), ``OUT/labels.csv``
(``path,label,patient_id``) and the task ``OUT/cxr.yaml``. Same seed, same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = ("no-lesion", "lesion")
#: brightness a rib adds over a lung, and over the heart and mediastinum (faint: no lesion-like spots there)
RIB, RIB_OVER_HEART = 0.2, 0.05
#: the lesion: peak brightness added, and its radius range as a fraction of the image side (about 3 to
#: 5 pixels at 64: the brightest round spot in a lung at every size)
LESION, LESION_RADIUS = 0.5, (0.05, 0.08)
SIZES = {"full": 256, "medium": 128, "small": 64}
TASK_FILE = "cxr.yaml"
#: every DICOM_EVERY-th image is written as DICOM (when pydicom is present)
DICOM_EVERY = 8
_UID_ROOT = "1.2.826.0.1.3680043.8.498.1"
PROMPT = ("This is a frontal chest radiograph. Is there a lesion (a round, bright opacity) in either "
          "lung? Answer with one number: no lesion (0) or lesion (1). Reply in the form "
          "'Choice: <0 or 1>'.")


@dataclass(frozen=True)
class SynthImage:
    path: str  # relative to OUT
    patient_id: str
    label: int


def chest_image(rng: np.random.Generator, size: int, lesion: bool) -> np.ndarray:
    """One image, float64 in [0, 1], shape ``(size, size)``; a lesion in a random lung when ``lesion``."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.full((size, size), 0.05)
    body = ((x - 0.5) / 0.46) ** 2 + ((y - 0.55) / 0.5) ** 2 <= 1
    img[body] = 0.55
    lungs = []
    for cx in (0.31 + rng.normal(0, 0.01), 0.69 + rng.normal(0, 0.01)):
        lung = ((x - cx) / 0.15) ** 2 + ((y - 0.5) / 0.3) ** 2 <= 1
        img[lung] = 0.18
        lungs.append((cx, lung))
    heart = ((x - 0.54) / 0.12) ** 2 + ((y - 0.66) / 0.13) ** 2 <= 1
    centre = heart | ((np.abs(x - 0.5) < 0.05) & (y > 0.15) & (y < 0.75))
    img[centre] = 0.6
    for k in range(8):  # ribs: bright arcs over each lung, faint over the heart
        y0 = 0.25 + 0.065 * k + rng.normal(0, 0.004)
        curve = y0 + 0.08 * (np.abs(x - 0.5) - 0.2) ** 2 * 4
        rib = (np.abs(y - curve) < 0.011) & np.logical_or(*(lung for _, lung in lungs))
        img[rib] += np.where(centre[rib], RIB_OVER_HEART, RIB)
    if lesion:
        cx, lung = lungs[int(rng.integers(2))]
        inside = np.argwhere(lung & ~centre)
        cy_px, cx_px = inside[int(rng.integers(len(inside)))]
        radius = rng.uniform(*LESION_RADIUS)
        d2 = (x - cx_px / size) ** 2 + (y - cy_px / size) ** 2
        img += LESION * np.exp(-d2 / (2 * (radius / 1.5) ** 2)) * lung
    img += rng.normal(0, 0.025, img.shape)
    return np.clip(img, 0, 1)


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.floor(pixels * 255 + 0.5).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def dicom_bytes(pixels: np.ndarray, *, uid: str, monochrome1: bool = False) -> bytes:
    """A 16-bit DICOM (stored 0..4095, rescale slope 1, intercept -1024, windowed on the image's range);
    ``monochrome1``: the stored pixels inverted and tagged ``MONOCHROME1`` (the image looks the same).
    Deterministic: fixed UIDs from ``uid``, no dates."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    stored = np.floor(pixels * 4095 + 0.5).astype(np.uint16)
    if monochrome1:
        stored = (4095 - stored).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid + ".1", uid + ".2"
    ds.Modality = "CR"
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 2048 - 1024, 4096
    ds.PixelData = stored.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _has_pydicom() -> bool:
    try:
        import pydicom  # noqa: F401
    except ImportError:
        return False
    return True


def synth_cxr(out: str | Path, *, patients: int = 40, seed: int = 0, size: str = "full",
              lesion_fraction: float = 0.5, dicom: bool | None = None) -> list[SynthImage]:
    """Write the cohort (module docstring) into ``out``; returns its images in file order.

    ``dicom``: write some images as DICOM (None: when pydicom is installed)."""
    from medvlm._io import write_text_atomic
    from medvlm.errors import ConfigError
    from medvlm.registry import check_choice

    check_choice("size", size, list(SIZES))
    if patients < 1:
        raise ConfigError(f"--patients must be at least 1, got {patients}")
    if not 0.0 <= lesion_fraction <= 1.0:
        raise ConfigError(f"lesion fraction must be within [0, 1], got {lesion_fraction}")
    dicom = _has_pydicom() if dicom is None else dicom
    out = Path(out).expanduser()
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 2])
    images: list[SynthImage] = []
    n_dicom = 0
    for p in range(patients):
        pid = f"CXR{p + 1:04d}"
        n_images = int(rng.choice([1, 2, 3], p=[0.65, 0.25, 0.1]))
        for k in range(n_images):
            label = int(rng.random() < lesion_fraction)
            pixels = chest_image(rng, SIZES[size], bool(label))
            index = len(images)
            if dicom and index % DICOM_EVERY == DICOM_EVERY - 1:
                rel = f"images/{pid}_{k + 1}.dcm"
                data = dicom_bytes(pixels, uid=f"{_UID_ROOT}.{seed}.{index}", monochrome1=n_dicom == 0)
                n_dicom += 1
            else:
                rel = f"images/{pid}_{k + 1}.png"
                data = _png(pixels)
            (out / rel).write_bytes(data)
            images.append(SynthImage(rel, pid, label))
    lines = ["path,label,patient_id"] + [f"{i.path},{CLASSES[i.label]},{i.patient_id}" for i in images]
    write_text_atomic(out / "labels.csv", "\n".join(lines) + "\n")
    write_text_atomic(out / TASK_FILE, task_yaml())
    return images


def task_yaml() -> str:
    """The synthetic cohort's task file (``cxr.yaml``)."""
    import json

    return (f"name: cxr\n"
            f"description: \"Synthetic chest radiographs: is there a lesion? One prediction per image, "
            f"no-lesion (0), lesion (1)\"\n"
            f"classes: [{', '.join(CLASSES)}]\n"
            f"positive: lesion\n"
            f"source: {{kind: image-csv, csv: labels.csv}}\n"
            f"prompt: {json.dumps(PROMPT)}\n")
