"""The package medvlm.consistency: its public names are the modules' own objects, and importing it stays
light (pandas, matplotlib and torch are imported inside the functions that need them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import medvlm.consistency as C
from medvlm.consistency import config, figures, images, run, stats, summary


@pytest.mark.parametrize("name", C.__all__)
def test_public_names_are_re_exported_from_their_module(name):
    homes = [m for m in (stats, config, images, summary, run, figures) if name in vars(m)]
    assert homes and all(getattr(C, name) is getattr(m, name) for m in homes)


def test_report_finds_the_figure_functions_by_name():
    from medvlm.report.sections.consistency import _consistency_fn

    assert _consistency_fn("agreement_figure") is figures.agreement_figure
    assert _consistency_fn("temperature_figure") is figures.temperature_figure


def test_import_is_light():
    code = ("import sys\nimport medvlm.consistency\n"
            "print([m for m in ('pandas', 'numpy', 'matplotlib', 'torch', 'transformers', 'rich') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
