"""Helpers for tests/cnn: a tiny, separable synthetic work folder in the documented formats
(manifest, volumes, splits).

Volumes are float32 (4, 16, 24, 24), channels t1, t1ce, t2, flair; HGG (label 1) patients have a
brighter FLAIR (mean +1.5) in the centre of the volume, so the classes are separable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SHAPE = (4, 16, 24, 24)
MANIFEST_COLUMNS = [
    "patient_id", "grade", "label", "status", "reason", "note", "t1", "t1ce", "t2", "flair", "seg",
    "orig_shape", "tumour_x_min", "tumour_x_max", "tumour_y_min", "tumour_y_max", "tumour_z_min",
    "tumour_z_max", "crop_x_min", "crop_x_max", "crop_y_min", "crop_y_max", "crop_z_min", "crop_z_max",
    "volume",
]


def make_work(root: Path, *, n: int = 36, n_lgg: int = 12, n_test: int = 6, folds: int = 3, seed: int = 0,
              shape: tuple[int, ...] = SHAPE, signal: float = 1.5) -> Path:
    """Write WORK/manifest.csv, WORK/volumes/<id>.npy and WORK/splits.json; return WORK."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "volumes").mkdir(exist_ok=True)
    ids = [f"BraTS20_Training_{i:03d}" for i in range(1, n + 1)]
    labels = [0] * n_lgg + [1] * (n - n_lgg)
    order = rng.permutation(n)
    ids = [ids[i] for i in order]
    labels = [labels[i] for i in order]
    rows = [",".join(MANIFEST_COLUMNS)]
    for pid, label in zip(ids, labels, strict=True):
        vol = rng.normal(0, 1, size=shape).astype(np.float32)
        d, h, w = shape[1:]
        vol[3, d // 4: 3 * d // 4, h // 4: 3 * h // 4, w // 4: 3 * w // 4] += signal * label
        np.save(root / "volumes" / f"{pid}.npy", vol)
        values = {c: "" for c in MANIFEST_COLUMNS}
        values.update(patient_id=pid, grade="HGG" if label else "LGG", label=str(label), status="ok",
                      volume=f"volumes/{pid}.npy", orig_shape="240x240x155")
        rows.append(",".join(values[c] for c in MANIFEST_COLUMNS))
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    # stratified: test takes n_test with the class ratio, the rest is split into `folds` val parts
    lgg = [p for p, lab in zip(ids, labels, strict=True) if lab == 0]
    hgg = [p for p, lab in zip(ids, labels, strict=True) if lab == 1]
    n_test_lgg = round(n_test * n_lgg / n)
    test = lgg[:n_test_lgg] + hgg[: n_test - n_test_lgg]
    rest_lgg, rest_hgg = lgg[n_test_lgg:], hgg[n_test - n_test_lgg:]
    fold_list = []
    for k in range(folds):
        val = rest_lgg[k::folds] + rest_hgg[k::folds]
        train = [p for p in rest_lgg + rest_hgg if p not in val]
        fold_list.append({"train": train, "val": val})
    splits = {"seed": seed, "test_fraction": n_test / n, "test": test, "folds": fold_list}
    (root / "splits.json").write_text(json.dumps(splits, indent=2))
    return root
