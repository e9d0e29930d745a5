"""A synthetic BraTS 2020 cohort: real anatomy (MNI152 from nilearn), four contrasts, implanted gliomas.

Written in the exact training layout (see :mod:`medvlm.data.brats`), deterministic by seed (same seed,
same bytes: gzip is written with mtime 0). Each patient:

- anatomy: nilearn's bundled MNI152 2009a T1 template and brain mask, placed in the BraTS grid
  (``full``: 240x240x155 at 1 mm; ``medium``: 120x120x78 at 2 mm; ``small``: 48x48x31 at 5 mm),
  stored like BraTS (affine
  ``diag(-s, -s, s)``, skull-stripped: background exactly 0);
- contrasts from soft tissue classes (WM/GM/CSF): T1 (WM > GM > CSF), T1ce (T1 plus vessels/enhancement),
  T2 (CSF > GM > WM), FLAIR (CSF dark, WM/GM similar);
- a tumour of random position, size, anisotropy and irregular (noise-perturbed) boundary; its look is
  driven by a latent *aggressiveness* ``a`` in [0, 1], drawn from Beta(5, 2.2) for HGG and Beta(2.2, 5)
  for LGG, and from the other grade's distribution for ~10% atypical patients, so grades overlap:
  high ``a`` = large, necrotic core (label 1, dark T1, bright T2) with a ring-enhancing rim on T1ce
  (label 4), large oedema (label 2), heterogeneous; low ``a`` = small, non-enhancing, homogeneous
  T2/FLAIR hyperintense core (label 1), little oedema;
- a smooth multiplicative bias field per contrast and Gaussian noise; stored as int16 (images) and
  uint8 (seg, labels 0/1/2/4).

Labels: LGG = 0, HGG = 1.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvlm._io import write_bytes_atomic, write_text_atomic
from medvlm.data.brats import MAPPING_FILE, MAPPING_HEADER, MODALITIES, TRAINING_FOLDER
from medvlm.data.subgroups import SURVIVAL_FILE
from medvlm.errors import ConfigError

#: grid shape (x, y, z) and voxel size in mm of each ``--size``.
SIZES: dict[str, tuple[tuple[int, int, int], float]] = {
    "full": ((240, 240, 155), 1.0),
    "medium": ((120, 120, 78), 2.0),
    "small": ((48, 48, 31), 5.0),
}
#: intensity scale of each contrast (int16 values of healthy tissue are a fraction of it).
_SCALE = {"t1": 800.0, "t1ce": 900.0, "t2": 1200.0, "flair": 600.0}
#: healthy tissue intensity (relative) per contrast: (wm, gm, csf).
_TISSUE = {
    "t1": (0.85, 0.60, 0.20),
    "t1ce": (0.85, 0.62, 0.22),
    "t2": (0.45, 0.65, 1.00),
    "flair": (0.55, 0.65, 0.10),
}
ATYPICAL_FRACTION = 0.1
#: contributing collections of the synthetic patients (assigned in turn, as in name_mapping.csv)
SYNTH_SITES = ("CBICA", "TCIA", "2013")


@dataclass(frozen=True)
class SynthPatient:
    """What :func:`make_patient` drew for one patient (kept for tests and summaries)."""

    patient_id: str
    grade: str  # "HGG" or "LGG"
    aggressiveness: float
    atypical: bool
    centre_mm: tuple[float, float, float]
    radius_mm: float


def patient_id(index: int) -> str:
    """BraTS 2020 training id of patient ``index`` (1-based).

    >>> patient_id(7)
    'BraTS20_Training_007'
    """
    return f"BraTS20_Training_{index:03d}"


@functools.lru_cache(maxsize=2)
def anatomy(size: str = "small") -> tuple[np.ndarray, np.ndarray]:
    """Template T1 intensities (0..1, float32) and brain mask (bool) on the RAS grid of ``size``.

    Shapes ``(X, Y, Z)`` of :data:`SIZES`; the brain is centred in the grid.
    """
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template
    from scipy import ndimage

    shape, spacing = SIZES[size]
    template = np.asarray(load_mni152_template().dataobj, dtype=np.float32)
    mask = np.asarray(load_mni152_brain_mask().dataobj, dtype=np.float32)
    idx = np.nonzero(mask > 0)
    centre_t = np.array([(i.min() + i.max()) / 2.0 for i in idx])
    centre_g = (np.array(shape) - 1) / 2.0
    offset = centre_t - spacing * centre_g  # template index = spacing * grid index + offset (1 mm template)
    if spacing == 1.0:
        offset = np.round(offset)
    matrix = np.full(3, spacing)
    t = ndimage.affine_transform(template * (mask > 0), matrix, offset, output_shape=shape, order=1)
    m = ndimage.affine_transform(mask, matrix, offset, output_shape=shape, order=1)
    brain = m > 0.5
    t = np.where(brain, t, 0).astype(np.float32)
    return t, brain


@functools.lru_cache(maxsize=2)
def _depth(size: str) -> np.ndarray:
    """Distance (mm) of each brain voxel to the outside of the brain mask."""
    from scipy import ndimage

    _, brain = anatomy(size)
    return ndimage.distance_transform_edt(brain, sampling=SIZES[size][1]).astype(np.float32)


def _tissues(t: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    wm = np.clip((t - 0.65) / 0.2, 0, 1)
    csf = np.clip((0.5 - t) / 0.2, 0, 1) * brain
    gm = np.clip(1 - wm - csf, 0, 1) * brain
    return wm, gm, csf


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (field / (field.std() + 1e-8)).astype(np.float32)


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int], amplitude: float) -> np.ndarray:
    """exp of a random quadratic polynomial over the grid (coordinates in [-1, 1]): smooth, ~+-amplitude."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    c = rng.uniform(-1, 1, 9).astype(np.float32)
    poly = c[0] * x + c[1] * y + c[2] * z + c[3] * x * y + c[4] * y * z + c[5] * x * z
    poly = poly + c[6] * x * x + c[7] * y * y + c[8] * z * z
    return np.exp(amplitude * poly / 3.0).astype(np.float32)


def _draw_aggressiveness(rng: np.random.Generator, grade: str) -> tuple[float, bool]:
    atypical = bool(rng.random() < ATYPICAL_FRACTION)
    hgg_like = (grade == "HGG") != atypical
    a = rng.beta(5.0, 2.2) if hgg_like else rng.beta(2.2, 5.0)
    return float(a), atypical


def make_patient(index: int, grade: str, *, seed: int = 0, size: str = "small") -> tuple[
    dict[str, np.ndarray], SynthPatient
]:
    """Volumes of one synthetic patient on the RAS grid of ``size``.

    Returns ``({"t1", "t1ce", "t2", "flair": int16 (X, Y, Z), "seg": uint8 (X, Y, Z)}, SynthPatient)``.
    Seg labels: 0 background, 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing. Deterministic in
    ``(seed, index, grade, size)``.
    """
    from scipy import ndimage

    shape, spacing = SIZES[size]
    rng = np.random.default_rng([seed, index, 2020])
    t, brain = anatomy(size)
    a, atypical = _draw_aggressiveness(rng, grade)

    # --- tumour geometry (mm) -------------------------------------------------------------------
    radius = float(rng.uniform(7, 11) + 11 * a)  # core radius
    necrosis = float(np.clip(0.75 * a - 0.2 + rng.normal(0, 0.05), 0, 0.7))  # inner fraction of core
    enhancement = float(np.clip(2.2 * (a - 0.4) + rng.normal(0, 0.1), 0, 1))  # T1ce rim strength
    rim = float(rng.uniform(0.25, 0.4))  # rim thickness as a fraction of the radius
    oedema = float(np.clip(0.1 + 0.8 * a + rng.normal(0, 0.08), 0.05, 1.0))  # beyond the core
    hetero = float(0.04 + 0.3 * a)
    irregular = float(rng.uniform(0.12, 0.3) + 0.1 * a)

    depth = _depth(size)
    cerebrum = np.zeros(shape, bool)
    cerebrum[:, :, int(shape[2] * 0.35):] = True  # keep tumours above the cerebellum
    need = min(radius * 0.8, float(depth.max()) * 0.6)
    candidates = np.argwhere((depth >= need) & cerebrum)
    if len(candidates) == 0:
        candidates = np.argwhere(depth >= depth.max() * 0.5)
    centre = candidates[rng.integers(len(candidates))].astype(np.float32)
    centre = centre + rng.uniform(-0.5, 0.5, 3).astype(np.float32)

    # local box around the tumour
    reach = radius * (1 + oedema) * (1 + 2 * irregular) * 1.3 + 2 * spacing
    half = int(np.ceil(reach / spacing))
    lo = np.maximum(np.floor(centre).astype(int) - half, 0)
    hi = np.minimum(np.floor(centre).astype(int) + half + 1, shape)
    box = tuple(slice(int(a0), int(b0)) for a0, b0 in zip(lo, hi, strict=True))
    bshape = tuple(int(b0 - a0) for a0, b0 in zip(lo, hi, strict=True))
    grid = np.meshgrid(*[np.arange(a0, b0, dtype=np.float32) for a0, b0 in zip(lo, hi, strict=True)],
                       indexing="ij")
    rel = np.stack([(g - c) * spacing for g, c in zip(grid, centre, strict=True)], axis=-1)  # mm
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))  # random rotation
    stretch = rng.uniform(0.75, 1.3, 3)
    rel = (rel @ q.astype(np.float32)) / stretch.astype(np.float32)
    sigma_vox = max(radius / spacing / 2.5, 1.0)
    noise = _smooth_noise(rng, bshape, sigma_vox)
    d = np.linalg.norm(rel, axis=-1) / radius * (1 + irregular * np.tanh(noise))
    noise_ed = _smooth_noise(rng, bshape, sigma_vox)
    d_ed = np.linalg.norm(rel, axis=-1) / radius * (1 + 1.5 * irregular * np.tanh(noise_ed))
    local_brain = brain[box]

    core = (d < 1.0) & local_brain
    seg_local = np.zeros(bshape, np.uint8)
    seg_local[(d_ed < 1.0 + oedema) & local_brain] = 2
    seg_local[core] = 1
    enhancing = np.zeros(bshape, bool)
    if enhancement > 0.12:
        enhancing = core & (d >= max(necrosis, 1.0 - rim))
        seg_local[enhancing] = 4
    necrotic = core & (d < necrosis) & ~enhancing
    solid = core & ~enhancing & ~necrotic
    if not core.any():  # the brain was too thin here: force a minimal core at the centre voxel
        c = tuple(int(v) for v in np.floor(centre) - lo)
        seg_local[c] = 1
        solid[c] = True
    seg = np.zeros(shape, np.uint8)
    seg[box] = seg_local

    # --- contrasts ------------------------------------------------------------------------------
    wm, gm, csf = _tissues(t, brain)
    het = _smooth_noise(rng, bshape, max(1.0, 3.0 / spacing))
    # relative intensities (t1, t1ce, t2, flair) of each compartment
    compartments = [
        (seg_local == 2, (0.55, 0.57, 0.88, 0.95), 0.5),
        (solid, (0.48, 0.50 + 0.15 * enhancement, 0.95, 0.97), 0.5),
        (necrotic, (0.25, 0.27, 1.10, 0.55), 1.0),
        (enhancing, (0.55, 0.75 + 1.2 * enhancement, 0.80, 0.90), 1.0),
    ]
    volumes: dict[str, np.ndarray] = {}
    for ci, name in enumerate(MODALITIES):
        w, g, c = _TISSUE[name]
        img = (w * wm + g * gm + c * csf).astype(np.float32)
        local = img[box]
        for region, values, het_weight in compartments:
            if not region.any():
                continue
            weight = ndimage.gaussian_filter(region.astype(np.float32), 0.6) * local_brain
            value = values[ci] * (1 + hetero * het_weight * het)
            local = local * (1 - weight) + value * weight
        img[box] = local
        bias = _bias_field(rng, shape, 0.15)
        img = img * bias * _SCALE[name]
        img = img + rng.normal(0, 0.025 * _SCALE[name], shape).astype(np.float32)
        img = np.where(brain, np.clip(img, 1, 32000), 0)
        volumes[name] = np.rint(img).astype(np.int16)
    volumes["seg"] = seg
    info = SynthPatient(patient_id(index), grade, a, atypical,
                        tuple(float(v) * spacing for v in centre), radius)  # type: ignore[arg-type]
    return volumes, info


def brats_affine(size: str) -> np.ndarray:
    """The affine BraTS files carry: x and y flipped (``diag(-s, -s, s)``), origin as in the release.

    >>> brats_affine("full")[:3].tolist()
    [[-1.0, 0.0, 0.0, -0.0], [0.0, -1.0, 0.0, 239.0], [0.0, 0.0, 1.0, 0.0]]
    """
    shape, s = SIZES[size]
    affine = np.diag([-s, -s, s, 1.0])
    affine[1, 3] = (shape[1] - 1) * s
    affine[0, 3] = -0.0
    return affine


def nifti_bytes(array_ras: np.ndarray, size: str, *, gz: bool) -> bytes:
    """Serialise a RAS-grid array as a BraTS-oriented NIfTI-1 file (bytes; gzip with mtime 0)."""
    import nibabel as nib

    stored = np.ascontiguousarray(array_ras[::-1, ::-1, :])
    img = nib.Nifti1Image(stored, brats_affine(size))
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_qform(brats_affine(size), code=1)
    img.header.set_sform(brats_affine(size), code=1)
    raw = img.to_bytes()
    if not gz:
        return raw
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as fh:
        fh.write(raw)
    return buf.getvalue()


def assign_grades(patients: int, lgg_fraction: float, seed: int) -> list[str]:
    """Grades of patients 1..N: ``round(N * lgg_fraction)`` LGG at seeded random positions.

    >>> assign_grades(4, 0.5, 0).count("LGG")
    2
    """
    n_lgg = int(round(patients * lgg_fraction))
    grades = np.array(["HGG"] * patients, dtype=object)
    rng = np.random.default_rng([seed, 7])
    grades[rng.permutation(patients)[:n_lgg]] = "LGG"
    return [str(g) for g in grades]


def synth_cohort(
    out: str | Path,
    *,
    patients: int = 40,
    lgg_fraction: float = 0.2,
    seed: int = 0,
    size: str = "full",
    gzip_files: bool = True,
    progress: bool = True,
) -> list[SynthPatient]:
    """Write a synthetic cohort under ``out/MICCAI_BraTS2020_TrainingData`` (see module docstring).

    Returns one :class:`SynthPatient` per patient (``BraTS20_Training_001`` ...). Same arguments, same
    bytes. Raises :class:`ConfigError` for a bad option.
    """
    from medvlm.registry import check_choice

    check_choice("--size", size, list(SIZES))
    if patients < 1:
        raise ConfigError(f"--patients must be at least 1, got {patients}")
    if not 0.0 <= lgg_fraction <= 1.0:
        raise ConfigError(f"--lgg-fraction must be within [0, 1], got {lgg_fraction}")
    training = Path(out).expanduser() / TRAINING_FOLDER
    training.mkdir(parents=True, exist_ok=True)
    grades = assign_grades(patients, lgg_fraction, seed)
    ext = ".nii.gz" if gzip_files else ".nii"
    infos: list[SynthPatient] = []
    with _progress(progress) as bar:
        task = bar.add_task("synth", total=patients)
        for i, grade in enumerate(grades, start=1):
            volumes, info = make_patient(i, grade, seed=seed, size=size)
            folder = training / info.patient_id
            folder.mkdir(exist_ok=True)
            for name, arr in volumes.items():
                payload = nifti_bytes(arr, size, gz=gzip_files)
                write_bytes_atomic(folder / f"{info.patient_id}_{name}{ext}", payload)
            infos.append(info)
            bar.advance(task)
    write_text_atomic(training / MAPPING_FILE, mapping_csv(infos))
    write_text_atomic(training / SURVIVAL_FILE, survival_csv(infos, seed))
    return infos


def mapping_csv(infos: list[SynthPatient]) -> str:
    """``name_mapping.csv`` text with the real header; older-release ids are synthetic, TCGA id ``NA``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MAPPING_HEADER)
    for i, info in enumerate(infos):
        n = info.patient_id.rsplit("_", 1)[-1]
        site = SYNTH_SITES[i % len(SYNTH_SITES)]  # subgroups as in the release (patient order, no grade link)
        tcga = f"TCGA-SY-{n}" if site == "TCIA" else "NA"
        writer.writerow([info.grade, f"Brats17_{site}_{n}_1", f"Brats18_{site}_{n}_1", tcga,
                         f"BraTS19_{site}_{n}_1", info.patient_id])
    return buf.getvalue()


def survival_csv(infos: list[SynthPatient], seed: int) -> str:
    """``survival_info.csv`` text (``Brats20ID,Age,Survival_days,Extent_of_Resection``) for the HGG
    patients, as in the release; ages drawn from a seeded uniform 25-80, with no link to the images."""
    rng = np.random.default_rng([seed, 20])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Brats20ID", "Age", "Survival_days", "Extent_of_Resection"])
    for info in infos:
        age, days = float(rng.uniform(25, 80)), int(rng.integers(30, 1500))
        if info.grade == "HGG":
            writer.writerow([info.patient_id, f"{age:.3f}", days, "GTR"])
    return buf.getvalue()


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medvlm._console import is_terminal, make_console

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=make_console(stderr=True), disable=not enabled or not is_terminal(stderr=True),
                    transient=False)  # no bar in a log file
