"""Fixtures of the adversarial tests: a tiny VLM work folder, a fake OpenAI-compatible server, and the
one rule every bad input is held to (:func:`one_line_error`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.vlm.conftest import FakeServer, write_tiny_work


@pytest.fixture(scope="session")
def vlm_work(tmp_path_factory) -> Path:
    """4 patients P000..P003 in the test cohort, 12 axial tumour slices (docs/internals.md format)."""
    return write_tiny_work(tmp_path_factory.mktemp("advwork"))


@pytest.fixture()
def fake_server():
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny random Llama-3.2-Vision-architecture model (offline)."""
    from medvlm.vlm.tiny import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("advtiny") / "model", seed=0)
