"""eval-vlm and consistency against a real OpenAI-compatible server: ``transformers serve`` (installed by
``make test`` through the dev extra, ``transformers[serving]``) serving the tiny stand-in on loopback.
Generation works end to end, resumes after the server is killed, and the options it cannot honour stop
the run at once (exit 2, one line)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from medvlm.cli import invoke

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (importlib.util.find_spec("fastapi") and importlib.util.find_spec("uvicorn")),
                       reason="transformers[serving] is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """``transformers serve MODEL --port P`` in a child process (offline), started and stopped at will."""

    def __init__(self, model: Path) -> None:
        self.model, self.port, self.proc = model, _free_port(), None
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        exe = Path(sys.executable).with_name("transformers")
        cmd = [str(exe) if exe.is_file() else shutil.which("transformers"), "serve", str(self.model),
               "--host", "127.0.0.1", "--port", str(self.port)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import httpx

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        pytest.fail("transformers serve did not start within 90 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture(scope="module")
def serve(tiny_vlm):
    server = Serve(tiny_vlm)
    server.start()
    yield server
    server.stop()


def _args(work, out, serve, *extra):
    return ["eval-vlm", str(work), "--out", str(out), "--backend", "openai", "--model", str(serve.model),
            "--base-url", serve.url, "--orientations", "axial", "--bootstrap", "0", "--no-progress",
            "--max-new-tokens", "8", *extra]


def test_generate_end_to_end_then_resume_after_the_server_was_killed(tiny_work, serve, tmp_path, capsys):
    out = tmp_path / "run"
    assert invoke(_args(tiny_work, out, serve)) == 0
    calls = pd.read_csv(out / "slices.csv", keep_default_na=False)
    assert len(calls) > 0 and set(calls["finish_reason"]) <= {"stop", "length"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_calls"] == len(calls)
    assert metrics["n_truncated"] == (calls["finish_reason"] == "length").sum()
    n_first = len(calls)
    serve.stop()  # killed: asking for more now stops at once, nothing lost
    capsys.readouterr()
    assert invoke(_args(tiny_work, out, serve, "--repeats", "2")) == 2
    assert "cannot reach the server" in capsys.readouterr().err
    serve.start()
    assert invoke(_args(tiny_work, out, serve, "--repeats", "2")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_cached"] == n_first and metrics["n_sent"] == n_first  # only the new repeats


@pytest.mark.parametrize(("extra", "message"), [
    (["--scoring", "logprobs"], "use --scoring generate"),
    (["--structured", "choice"], "use --structured none"),
    (["--structured", "json"], "ignored --structured json"),
])
def test_what_the_server_cannot_honour_stops_at_once(tiny_work, serve, tmp_path, capsys, extra, message):
    assert invoke(_args(tiny_work, tmp_path / "r", serve, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("medvlm: error: ") and err.count("\n") == 1 and message in err


def test_a_model_the_server_is_not_pinned_to(tiny_work, serve, tmp_path, capsys):
    args = _args(tiny_work, tmp_path / "r", serve)
    args[args.index("--model") + 1] = "other-model"
    assert invoke(args) == 2
    err = capsys.readouterr().err
    assert "does not serve model 'other-model'" in err and "Server is pinned to" in err


def test_consistency_samples_for_real(tiny_work, serve, tmp_path):
    out = tmp_path / "cons"
    assert invoke(["consistency", str(tiny_work), "--out", str(out), "--backend", "openai", "--model",
                   str(serve.model), "--base-url", serve.url, "--patient", "P000", "--repeats", "4",
                   "--temperature", "1.0", "--max-new-tokens", "8", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 4 and summary["sampling_effective"] is True  # make-tiny-vlm's config samples


def test_a_text_only_request_is_answered_by_a_real_server(tiny_work, serve, tmp_path):
    """eval-vlm --image none: a real OpenAI-compatible server takes the text-only message."""
    assert invoke(_args(tiny_work, tmp_path / "none", serve, "--image", "none")) == 0
    slices = pd.read_csv(tmp_path / "none" / "slices.csv", keep_default_na=False)
    assert len(slices) == 12 and slices["raw"].str.len().gt(0).all()
    assert json.loads((tmp_path / "none" / "run.json").read_text())["config"]["image"] == "none"
