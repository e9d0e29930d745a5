"""Fixtures of the consistency tests: the VLM tests' tiny NIfTI cohort and local HTTP server (reused from
``tests/vlm/conftest.py``), a tiny Mllama."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _vlm_helpers():
    """``tests/vlm/conftest.py`` loaded under its own name (``write_tiny_work``, ``FakeServer``)."""
    path = Path(__file__).parents[1] / "vlm" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_medvlm_vlm_test_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


VLM = _vlm_helpers()
FakeServer = VLM.FakeServer


@pytest.fixture(scope="session")
def cons_work(tmp_path_factory) -> Path:
    """4 patients P000..P003 (HGG, LGG, HGG, LGG), all in the test cohort; volumes 12x12x8; tumour
    z 2..4 (P000, P002) or 3..5 (P001, P003), so the central axial slice is 3 or 4."""
    return VLM.write_tiny_work(tmp_path_factory.mktemp("conswork"))


@pytest.fixture()
def server():
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from medvlm.vlm.tiny import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("cons_tiny") / "model", seed=0)
