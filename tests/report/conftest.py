"""Fixtures of the report tests: one run folder of each kind, written in the documented formats."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_runs import make_cnn_run, make_consistency_run, make_finetune_run, make_vlm_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "cnn": make_cnn_run(root),
        "vlm": make_vlm_run(root),
        "consistency": make_consistency_run(root),
        "finetune": make_finetune_run(root),
    }
