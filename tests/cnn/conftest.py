"""Fixtures of tests/cnn: the tiny separable work folder (see cnn_helpers.make_work)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cnn_helpers import make_work


@pytest.fixture(scope="session")
def tiny_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_work(tmp_path_factory.mktemp("cnn") / "work")
