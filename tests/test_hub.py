"""A model that is neither a local folder nor on the Hub fails in seconds, with one line (issue 19)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from medvlm.errors import BackendError
from medvlm.hub import check_model_source


def test_a_folder_is_used_and_a_file_or_missing_path_is_refused(tmp_path):
    assert check_model_source(str(tmp_path)) == str(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(BackendError, match="a file, not a model folder"):
        check_model_source(str(tmp_path / "weights.bin"))
    for name in ("./typo", "/no/such/folder", "a/b/c"):
        with pytest.raises(BackendError, match=f"--model {name}: no such folder$"):
            check_model_source(name)


def test_offline_and_not_cached_is_refused_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError, match="no such folder, and not in the Hugging Face cache"):
        check_model_source("nosuch", "--base-model")


@pytest.mark.parametrize("command", [
    ["eval-vlm", "{work}", "--out", "{out}", "--backend", "transformers", "--model", "nosuch"],
    ["finetune", "{work}", "--out", "{out}", "--base-model", "nosuch-org/nosuch-model"],
])
def test_a_typo_without_internet_exits_2_within_seconds(prepared_work, tmp_path, command):
    """HF_HUB_OFFLINE unset, no network (the Hub's address points nowhere): exit 2 in seconds, not the
    minutes of from_pretrained's retries."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: refused at once, like no network
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache
    args = [a.replace("{work}", str(prepared_work)).replace("{out}", str(tmp_path / "run")) for a in command]
    # the timeout is a hang guard (before the fix, from_pretrained retried for minutes), not a speed test
    proc = subprocess.run([sys.executable, "-m", "medvlm", *args], capture_output=True, text=True,
                          timeout=90, env=env)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert err[-1].startswith("medvlm: error: ") and "no such folder" in err[-1]
    assert "Hub cannot be reached" in err[-1]
    assert "Traceback" not in proc.stderr
