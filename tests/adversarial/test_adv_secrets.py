"""A secret never reaches a file or the terminal: the OPENAI_API_KEY a server echoes back (in an error
body, a refusal, a malformed or a normal answer), the password of a ``--base-url`` (plain or
percent-encoded), and a secret-named ``--extra-body`` field. Checked byte for byte in every file of the
run folder (cache.sqlite and its WAL included), the report, experiment.json, stdout and stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medvlm.cli import invoke

KEY = "sk-proj-Secr3t/Key+Zz9"  # a "/" and "+": a server may write them JSON-escaped or percent-encoded
PASSWORD = "pa55:w@rd/x"  # given percent-encoded in the URL, echoed decoded by a server


def _forms(secret: str) -> list[str]:
    """The secret as a server may echo it: verbatim, JSON-escaped, percent-encoded."""
    from urllib.parse import quote

    return sorted({secret, json.dumps(secret)[1:-1], secret.replace("/", "\\/"), quote(secret, safe="")})


def _echo(route: str, secret: str, server):
    """A ``behave`` for the fake server: the probe is answered, then ``route`` echoes ``secret``."""
    escaped = secret.replace("/", "\\/")

    def behave(body, n):
        if route == "refused at the probe":
            return 401, {"error": {"message": f"Incorrect API key provided: {secret}"}}, 0
        if n == 1:
            return server.default(body, n)
        return {
            "500 error body": (500, {"error": f"upstream failed for Bearer {secret}"}, 0),
            "escaped in a 503 body": (503, '{"error": "key ' + escaped + ' throttled"}', 0),
            "400 refusal": (400, {"detail": f"bad request from {secret}"}, 0),
            "422 refusal": (422, {"detail": f"Unexpected fields in the request: {{'{secret}'}}"}, 0),
            "answer text": (200, server.completion(f"Choice: 1 Reasoning: your key is {secret}"), 0),
            "malformed answer": (200, {"choices": [{"oops": secret}]}, 0),
            "not JSON": (200, f"<html>{secret}</html>", 0),
        }[route]
    return behave


ROUTES = ["refused at the probe", "500 error body", "escaped in a 503 body", "400 refusal", "422 refusal",
          "answer text", "malformed answer", "not JSON"]


def _args(command, work, out, url, *extra):
    common = ["--backend", "openai", "--model", "llama3.2-vision", "--base-url", url, "--no-progress",
              "--max-retries", "0", *extra]
    if command == "eval-vlm":
        return ["eval-vlm", str(work), "--out", str(out), "--orientations", "axial", "--bootstrap", "0",
                *common]
    return ["consistency", str(work), "--out", str(out), "--repeats", "3", "--temperature", "0.5", *common]


def _assert_nowhere(secret: str, folder: Path, *texts: str) -> None:
    forms = _forms(secret)
    for text in texts:
        for form in forms:
            assert form not in text, (form, text[-500:])
    for f in folder.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            for form in forms:
                assert form.encode() not in data, (form, f)


def _run_and_report(capsys, args, out, tmp_path):
    code = invoke(args)
    first = capsys.readouterr()
    report = tmp_path / "report.html"
    if (out / "run.json").is_file():
        assert invoke(["report", str(out), "--out", str(report)]) in (0, 2)
    second = capsys.readouterr()
    return code, first.out + first.err + second.out + second.err


@pytest.mark.parametrize("command", ["eval-vlm", "consistency"])
@pytest.mark.parametrize("route", ROUTES)
def test_an_echoed_api_key_is_never_written_or_printed(vlm_work, tmp_path, capsys, monkeypatch, fake_server,
                                                      route, command):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    fake_server.behave = _echo(route, KEY, fake_server)
    out = tmp_path / "run"
    code, printed = _run_and_report(capsys, _args(command, vlm_work, out, fake_server.url), out, tmp_path)
    assert code in (0, 1, 2)
    assert fake_server.headers[0]["Authorization"] == f"Bearer {KEY}"  # it was sent, and only as a header
    _assert_nowhere(KEY, tmp_path, printed)


@pytest.mark.parametrize("command", ["eval-vlm", "consistency"])
@pytest.mark.parametrize("route", ROUTES)
def test_base_url_credentials_are_never_written_or_printed(vlm_work, tmp_path, capsys, fake_server, route,
                                                           command):
    from urllib.parse import quote

    url = fake_server.url.replace("http://", f"http://me:{quote(PASSWORD, safe='')}@")
    fake_server.behave = _echo(route, PASSWORD, fake_server)
    out = tmp_path / "run"
    code, printed = _run_and_report(capsys, _args(command, vlm_work, out, url), out, tmp_path)
    assert code in (0, 1, 2)
    _assert_nowhere(PASSWORD, tmp_path, printed)
    assert json.loads((out / "run.json").read_text())["config"]["base_urls"] == [
        fake_server.url.replace("http://", "http://me:***@")]


@pytest.mark.parametrize("url", ["ftp://me:{p}@host/v1", "http//me:{p}@host/v1", "me:{p}@host:8000/v1"])
def test_a_refused_base_url_does_not_print_its_password(vlm_work, tmp_path, capsys, url):
    secret = "hunter2-XyZ"
    assert invoke(_args("eval-vlm", vlm_work, tmp_path / "run", url.format(p=secret))) == 2
    err = capsys.readouterr().err
    assert err.startswith("medvlm: error: ") and secret not in err


@pytest.mark.parametrize("field", ["api_key", "Authorization", "x-api-token", "password", "client_secret"])
def test_a_secret_named_extra_body_field_is_masked_in_the_record(vlm_work, tmp_path, capsys, fake_server,
                                                                 field):
    secret = "eb-Secret-123456"
    fake_server.behave = _echo("500 error body", secret, fake_server)
    out = tmp_path / "run"
    body = json.dumps({field: secret, "top_k": 40})
    code, printed = _run_and_report(capsys, _args("eval-vlm", vlm_work, out, fake_server.url, "--extra-body",
                                                   body), out, tmp_path)
    assert code == 1
    assert fake_server.bodies[0][field] == secret  # sent to the server, as asked
    _assert_nowhere(secret, tmp_path, printed)
    assert json.loads((out / "run.json").read_text())["config"]["extra_body"] == {field: "***", "top_k": 40}


def test_experiment_records_mask_credentials(tmp_path, capsys, fake_server, monkeypatch):
    """``medvlm run``: experiment.json and the study report record the config, masked."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    url = fake_server.url.replace("http://", "http://me:s3cret-pw@")
    config = {"name": "adv", "out": "out", "data": {"synthetic": {"patients": 8, "size": "small"}},
              "prepare": {"shape": [8, 12, 12]}, "split": {"test_fraction": 0.25, "folds": 2},
              "vlm": [{"name": "v", "backend": "openai", "model": "llama3.2-vision", "base_urls": [url],
                       "extra_body": {"api_key": "eb-Secret-123456"}, "slices": "central:1",
                       "n_boot": 0, "max_retries": 0}]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    code = invoke(["run", str(path)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    assert (tmp_path / "out" / "experiment.json").is_file()
    for secret in ("s3cret-pw", "eb-Secret-123456", KEY):
        _assert_nowhere(secret, tmp_path / "out", printed.out + printed.err)


@pytest.mark.parametrize("key", ["sk-SECRETKEY-é", "sk-SECRETKEY-密钥", "sk-SECRET\nKEY", "sk-SECRET\tKEY",
                                 "sk-SECRET\x7fKEY", "sk-SECRETKEY-\u200b"])
@pytest.mark.parametrize("command", ["eval-vlm", "consistency"])
def test_a_key_that_cannot_be_a_header_is_one_line_before_any_request(vlm_work, tmp_path, capsys, monkeypatch,
                                                                    fake_server, key, command):
    """A key httpx cannot send (non-ASCII, a control character) is refused before any request, with one
    line that names OPENAI_API_KEY and not the key."""
    from tests.adversarial.checks import one_line_error

    monkeypatch.setenv("OPENAI_API_KEY", key)
    capsys.readouterr()
    assert invoke(_args(command, vlm_work, tmp_path / "run", fake_server.url)) == 2
    line = one_line_error(capsys, "OPENAI_API_KEY", "position")
    assert "SECRET" not in line and key not in line
    assert fake_server.bodies == [] and fake_server.model_gets == 0
