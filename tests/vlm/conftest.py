"""Fixtures for the VLM tests: one tiny Mllama per session, a tiny NIfTI cohort in the documented format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    from medvlm.vlm.tiny import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm") / "model", seed=0)


def write_tiny_work(root: Path, *, n_patients: int = 4, size: tuple[int, int, int] = (12, 12, 8)) -> Path:
    """A prepared work folder (manifest.csv + splits.json + NIfTIs) as docs/internals.md describes it.

    Patients P000.. alternate HGG/LGG; each has a bright blob ("tumour") covering a few slices.
    """
    import nibabel as nib
    import pandas as pd

    work = root / "work"
    (work / "nifti").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n_patients):
        pid = f"P{i:03d}"
        label = 1 if i % 2 == 0 else 0
        vol = rng.uniform(10, 20, size=size).astype(np.float32)
        x0, y0, z0 = 3 + i % 3, 4, 2 + i % 2
        vol[x0:x0 + 4, y0:y0 + 3, z0:z0 + 3] += 40 + 10 * label
        seg = np.zeros(size, np.uint8)
        seg[x0:x0 + 4, y0:y0 + 3, z0:z0 + 3] = 2
        row = {"patient_id": pid, "grade": "HGG" if label else "LGG", "label": label, "status": "ok",
               "reason": "", "note": ""}
        for m, scale in (("t1", 1.0), ("t1ce", 1.2), ("t2", 0.8), ("flair", 1.5), ("seg", None)):
            path = work / "nifti" / f"{pid}_{m}.nii.gz"
            data = seg if scale is None else vol * scale
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
            row[m] = str(path)
        row["orig_shape"] = "x".join(map(str, size))
        for axis, (lo, n) in zip("xyz", ((x0, 4), (y0, 3), (z0, 3)), strict=True):
            row[f"tumour_{axis}_min"], row[f"tumour_{axis}_max"] = lo, lo + n - 1
        for axis, n in zip("xyz", size, strict=True):
            row[f"crop_{axis}_min"], row[f"crop_{axis}_max"] = 0, n - 1
        row["volume"] = f"volumes/{pid}.npy"
        rows.append(row)
    pd.DataFrame(rows).to_csv(work / "manifest.csv", index=False)
    ids = [r["patient_id"] for r in rows]
    (work / "splits.json").write_text(json.dumps(
        {"seed": 0, "test_fraction": 0.5, "test": ids, "folds": [{"train": ids[:1], "val": ids[1:2]}]}))
    return work


@pytest.fixture(scope="session")
def make_tiny_work():
    """:func:`write_tiny_work` for tests (a fixture: ``from conftest import`` depends on which conftest
    module a whole-suite run imported first)."""
    return write_tiny_work


@pytest.fixture(scope="session")
def tiny_work(tmp_path_factory) -> Path:
    return write_tiny_work(tmp_path_factory.mktemp("vlmwork"))


class FakeServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 in a thread.

    ``behave(body, n)`` (n = 1-based count of requests so far) returns ``(status, json_or_text, delay_s)``;
    the default answers ``Choice: 1`` with log-probs. Every request body and header set is recorded.
    """

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.models: list[str] = ["llama3.2-vision"]  # what GET /v1/models lists
        self.model_gets = 0
        self.retry_after = "0"  # the Retry-After header of a 429
        self.lock = threading.Lock()
        self.behave = self.default
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                if not self.path.rstrip("/").endswith("/models"):
                    self.send_error(404)
                    return
                with server.lock:
                    server.model_gets += 1
                data = json.dumps({"object": "list", "data": [{"id": m, "object": "model"}
                                                              for m in server.models]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                import time

                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    server.bodies.append(body)
                    server.headers.append(dict(self.headers))
                    n = len(server.bodies)
                status, payload, delay = server.behave(body, n)
                if delay:
                    time.sleep(delay)
                data = (json.dumps(payload) if not isinstance(payload, str) else payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if status == 429:
                        self.send_header("Retry-After", server.retry_after)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @staticmethod
    def completion(text: str, logprobs: list | None = None) -> dict:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        if logprobs is not None:
            choice["logprobs"] = {"content": logprobs}
        return {"id": "x", "object": "chat.completion", "choices": [choice]}

    def default(self, body: dict, n: int):
        import math

        lp = [{"token": "Choice", "logprob": 0.0, "top_logprobs": []},
              {"token": ":", "logprob": 0.0, "top_logprobs": []},
              {"token": " 1", "logprob": math.log(0.7), "top_logprobs": [
                  {"token": " 1", "logprob": math.log(0.7)}, {"token": " 0", "logprob": math.log(0.2)},
                  {"token": " 2", "logprob": math.log(0.05)}, {"token": " I", "logprob": math.log(0.05)}]}]
        if "response_format" in body:  # a server that honours the JSON schema
            return 200, self.completion('{"choice": 1, "reasoning": "enhancing"}'), 0
        return 200, self.completion("Choice: 1 Reasoning: enhancing", lp if body.get("logprobs") else None), 0

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def fake_server():
    server = FakeServer()
    yield server
    server.close()
