"""Test-wide settings: nothing reaches the network, few threads, non-interactive plots."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm: its packaged cost map, no fetch
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")


# --- Session-wide synthetic data (owned by the data layer; other tests use them by name) -----------------
import pytest  # noqa: E402

SYNTH_PATIENTS = 12  # 3 LGG (lgg_fraction 0.25), 9 HGG
PREPARED_SHAPE = (24, 32, 32)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic BraTS cohort: ``<dir>/MICCAI_BraTS2020_TrainingData/BraTS20_Training_001..012``.

    12 patients (3 LGG, 9 HGG), ``--size small`` (48x48x31 at 5 mm), ``.nii.gz``, seed 0. Read only.
    """
    from medvlm.data.synth import synth_cohort

    out = tmp_path_factory.mktemp("synth")
    synth_cohort(out, patients=SYNTH_PATIENTS, lgg_fraction=0.25, seed=0, size="small", progress=False)
    return out


@pytest.fixture(scope="session")
def prepared_work(synth_dir, tmp_path_factory):
    """``synth_dir`` prepared at shape 24x32x32 and split (test fraction 0.25, 2 folds, seed 0).

    Holds ``manifest.csv`` (12 ok rows), ``volumes/*.npy`` (float32 4x24x32x32) and ``splits.json``
    (3 test patients, 2 folds). Read only: copy it before changing anything.
    """
    from medvlm.data.prepare import prepare
    from medvlm.data.split import make_split

    work = tmp_path_factory.mktemp("work")
    prepare(synth_dir, work, shape=PREPARED_SHAPE, progress=False)
    make_split(work, test_fraction=0.25, folds=2, seed=0)
    return work
