"""Fixtures for the fine-tuning tests: the tiny offline Mllama and a finetune run shared by several tests."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Small and quick: axial only, 2 slices per patient, a high learning rate so a few steps show learning.
FAST = dict(orientations=["axial"], max_slices_per_patient=2, batch_size=4, lr=2e-2, rank=8, alpha=16,
            dropout=0.0, seed=0)


@pytest.fixture(scope="session")
def ft_base(tmp_path_factory) -> Path:
    from medvlm.vlm.tiny import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("ft_base") / "model", seed=0)


@pytest.fixture(scope="session")
def lora_run(prepared_work, ft_base, tmp_path_factory):
    """One LoRA run (36 steps at lr 1e-2, --merge) on fold 0 of ``prepared_work``: (adapter, summary)."""
    from medvlm.finetune import FinetuneConfig, finetune

    out = tmp_path_factory.mktemp("ft_lora") / "adapter"
    cfg = FinetuneConfig(base_model=str(ft_base), max_steps=36, merge=True, select="last",
                         max_val_slices_per_patient=1, **{**FAST, "lr": 1e-2})
    return out, finetune(prepared_work, out, cfg)
