"""Find patients in the BraTS 2020 training layout (discovery only: no image is read here).

The real layout::

    MICCAI_BraTS2020_TrainingData/
        name_mapping.csv                      Grade,...,BraTS_2020_subject_ID
        BraTS20_Training_001/
            BraTS20_Training_001_t1.nii       (.nii or .nii.gz)
            BraTS20_Training_001_t1ce.nii
            BraTS20_Training_001_t2.nii
            BraTS20_Training_001_flair.nii
            BraTS20_Training_001_seg.nii

Quirks of the real release handled here: the widely used copy ships uncompressed ``.nii``; patient 355's
mask is named ``W39_1998.09.19_Segm.nii``. A folder with no ``*_seg`` file but exactly one NIfTI file
that is not a modality takes that file as its mask, and says so in ``PatientFiles.note``.

Labels: LGG = 0, HGG = 1 (:data:`GRADE_LABELS`).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from medvlm.errors import DataError

MODALITIES = ("t1", "t1ce", "t2", "flair")
FILE_KINDS = (*MODALITIES, "seg")
GRADE_LABELS = {"LGG": 0, "HGG": 1}
#: mask labels of BraTS: 0 background, 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing
SEG_LABELS = (0, 1, 2, 4)
TRAINING_FOLDER = "MICCAI_BraTS2020_TrainingData"
MAPPING_FILE = "name_mapping.csv"
MAPPING_HEADER = (
    "Grade",
    "BraTS_2017_subject_ID",
    "BraTS_2018_subject_ID",
    "TCGA_TCIA_subject_ID",
    "BraTS_2019_subject_ID",
    "BraTS_2020_subject_ID",
)
_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_KIND = re.compile(r"_(t1|t1ce|t2|flair|seg)$", re.IGNORECASE)


@dataclass
class PatientFiles:
    """The files found for one patient folder.

    ``files`` maps ``t1, t1ce, t2, flair, seg`` to a path (a kind is absent when not found);
    ``problems`` lists what makes the patient unusable before any image is read (empty when fine);
    ``note`` a remark for a usable patient (e.g. a mask taken from a non-standard file name).
    """

    patient_id: str
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    note: str = ""


def is_nifti(path: Path) -> bool:
    """True for ``*.nii`` and ``*.nii.gz`` files.

    >>> is_nifti(Path("a_t1.nii.gz")), is_nifti(Path("a.nii")), is_nifti(Path("a.csv"))
    (True, True, False)
    """
    return bool(_NIFTI.search(path.name))


def file_kind(path: Path) -> str | None:
    """The modality (``t1``, ``t1ce``, ``t2``, ``flair``) or ``seg`` a file name ends with, else None.

    >>> file_kind(Path("BraTS20_Training_001_t1ce.nii")), file_kind(Path("W39_1998.09.19_Segm.nii"))
    ('t1ce', None)
    """
    stem = _NIFTI.sub("", path.name)
    match = _KIND.search(stem)
    return match.group(1).lower() if match else None


_PATIENT_NAME = re.compile(r"^BraTS\d*_Training_\d+$", re.IGNORECASE)


def _patient_dirs(folder: Path, *, by_name: bool = False) -> list[Path]:
    """Subfolders holding NIfTI files (and, with ``by_name``, BraTS-named ones even when empty)."""
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from exc
    return [c for c in children if (by_name and _PATIENT_NAME.match(c.name))
            or any(is_nifti(f) for f in c.iterdir() if f.is_file())]


def find_training_folder(data: str | Path) -> Path:
    """The folder holding the patient folders: ``data`` itself, or one of its subfolders.

    Raises :class:`DataError` when ``data`` does not exist, is not a folder, or holds no patient folder.
    """
    data = Path(data).expanduser()
    if not data.exists():
        raise DataError(f"{data}: no such folder (DATA is the BraTS 2020 training folder or its parent)")
    if not data.is_dir():
        raise DataError(f"{data}: not a folder (DATA is the BraTS 2020 training folder or its parent)")
    if _patient_dirs(data):
        return data.resolve()
    candidates = [c for c in sorted(data.iterdir()) if c.is_dir() and _patient_dirs(c)]
    if len(candidates) > 1:
        training = [c for c in candidates if "train" in c.name.lower()]
        candidates = training if training else candidates
    if not candidates:
        raise DataError(
            f"{data}: no patient folder found (expected {TRAINING_FOLDER}/BraTS20_Training_NNN/*.nii[.gz] "
            "here or one level down)"
        )
    if len(candidates) > 1:
        names = ", ".join(c.name for c in candidates)
        raise DataError(f"{data}: several folders look like training data ({names}); pass one of them")
    return candidates[0].resolve()


def read_name_mapping(path: str | Path) -> dict[str, str]:
    """Map ``BraTS_2020_subject_ID`` -> ``Grade`` (upper case) from ``name_mapping.csv``.

    A grade other than HGG/LGG is kept as written (its patient is then skipped, naming it); two different
    grades for one patient are a DataError naming the patient.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            missing = [c for c in ("Grade", "BraTS_2020_subject_ID") if c not in fields]
            if missing:
                header = ",".join(MAPPING_HEADER)
                raise DataError(f"{path}: missing column(s) {missing} (expected header {header})")
            mapping: dict[str, str] = {}
            for row in reader:
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                pid, grade = row.get("BraTS_2020_subject_ID", ""), row.get("Grade", "").upper()
                if not pid or not grade:
                    continue
                if mapping.get(pid, grade) != grade:
                    raise DataError(f"{path}: patient {pid} has two grades ({mapping[pid]} and {grade}); "
                                    "keep one row per patient")
                mapping[pid] = grade
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the name mapping ({exc})") from exc
    return mapping


def find_name_mapping(training: Path, data: Path | None = None) -> Path:
    """``name_mapping.csv`` in the training folder (or in ``data``, its parent as given)."""
    for folder in (training, data, training.parent):
        if folder is not None and (Path(folder) / MAPPING_FILE).is_file():
            return Path(folder) / MAPPING_FILE
    raise DataError(
        f"{training}: no {MAPPING_FILE} (the BraTS 2020 file with Grade and BraTS_2020_subject_ID)"
    )


def discover_patient(folder: Path) -> PatientFiles:
    """Assign the NIfTI files of one patient folder to modalities; record problems and notes."""
    patient = PatientFiles(folder.name, folder.resolve())
    by_kind: dict[str, list[Path]] = {k: [] for k in FILE_KINDS}
    others: list[Path] = []
    for f in sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p)):
        kind = file_kind(f)
        (by_kind[kind] if kind else others).append(f.resolve())
    for kind in MODALITIES:
        found = by_kind[kind]
        if len(found) == 1:
            patient.files[kind] = found[0]
        elif len(found) > 1:
            patient.problems.append(f"{kind}: several files ({', '.join(p.name for p in found)})")
        else:
            patient.problems.append(f"missing {kind} file ({folder.name}_{kind}.nii[.gz])")
    segs = by_kind["seg"]
    if len(segs) == 1:
        patient.files["seg"] = segs[0]
    elif len(segs) > 1:
        patient.problems.append(f"seg: several files ({', '.join(p.name for p in segs)})")
    elif len(others) == 1:
        patient.files["seg"] = others[0]
        patient.note = f"mask taken from non-standard file {others[0].name}"
    elif others:
        names = ", ".join(p.name for p in others)
        patient.problems.append(f"missing seg file; ambiguous candidates ({names})")
    else:
        patient.problems.append(f"missing seg file ({folder.name}_seg.nii[.gz])")
    return patient


def discover(data: str | Path) -> tuple[Path, dict[str, str], list[PatientFiles]]:
    """Find the training folder, its grade mapping and every patient folder in it.

    Returns ``(training_folder, {patient_id: "HGG"|"LGG"}, [PatientFiles, ...])`` sorted by id.
    Raises :class:`DataError` for a bad DATA path, no patient folder, or no readable ``name_mapping.csv``.
    """
    data = Path(data).expanduser()
    training = find_training_folder(data)
    mapping = read_name_mapping(find_name_mapping(training, data))
    patients = [discover_patient(folder) for folder in _patient_dirs(training, by_name=True)]
    return training, mapping, patients
