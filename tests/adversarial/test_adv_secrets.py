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


# ------------------------------------------------------------------ the recorded command line (run.json)
CMD_SECRETS = ("pa55word", "qsecret123", "bodysecret99", KEY)
EXTRA_BODIES = ['{"token":"bodysecret99"}', '{"auth": {"password": "bodysecret99"}, "top_k": 40}',
                '{"x": [{"client_secret": "bodysecret99"}]}']


def _secret_argv(command, work, out, server_url, how, body):
    url = server_url.replace("http://", "http://user:pa55word@") + "?api_key=qsecret123"
    args = _args(command, work, out, url, "--extra-body", body)
    if how == "--option=value":
        args = [f"{a}={args[i + 1]}" if a in ("--base-url", "--extra-body") else a
                for i, a in enumerate(args) if i == 0 or args[i - 1] not in ("--base-url", "--extra-body")]
    return args


@pytest.mark.parametrize("body", EXTRA_BODIES)
@pytest.mark.parametrize("how", ["--option value", "--option=value"])
@pytest.mark.parametrize("command", ["eval-vlm", "consistency"])
def test_the_recorded_command_line_is_masked(vlm_work, tmp_path, capsys, monkeypatch, fake_server, command,
                                             how, body):
    """run.json's ``command`` (the line as typed, run as ``medvlm ...``) and the report show it masked."""
    import sys

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "run"
    args = _secret_argv(command, vlm_work, out, fake_server.url, how, body)
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/medvlm", *args])
    code, printed = _run_and_report(capsys, args, out, tmp_path)
    assert code == 0, printed[-2000:]
    recorded = json.loads((out / "run.json").read_text())["command"]
    assert recorded.startswith(f"medvlm {command} ") and "user:***@" in recorded and "api_key=***" in recorded
    assert '"***"' in recorded and ("--base-url=" in recorded) == (how == "--option=value")
    for secret in CMD_SECRETS:
        _assert_nowhere(secret, tmp_path, printed)
    assert "127.0.0.1" in (tmp_path / "report.html").read_text()  # the command is shown, masked


@pytest.mark.parametrize("kind", ["cnn", "vlm", "consistency", "finetune", "calibrated"])
def test_every_run_kind_records_its_command_masked(tmp_path, monkeypatch, kind):
    import sys

    from medvlm.runinfo import write_run_info

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setattr(sys, "argv", [
        "medvlm", "x", "--base-url", "https://me:pa55word@h/v1?token=qsecret123", "--extra-body",
        '{"api_key": "bodysecret99"}', "--note", "bodysecret99", "--key-echo", KEY,
        f"--b64={__import__('base64').b64encode(KEY.encode()).decode()}"])
    config = {"base_urls": ["http://u:pa55word@h/v1"], "extra_body": {"password": "bodysecret99"},
              "nested": [{"base_url": "http://u:pa55word@h"}]}
    path = write_run_info(tmp_path, kind=kind, config=config)
    text = path.read_text()
    for secret in (*CMD_SECRETS, __import__("base64").b64encode(KEY.encode()).decode()):
        assert secret not in text, (secret, text)
    info = json.loads(text)
    assert info["command"].startswith("medvlm x --base-url https://me:***@h/v1?token=***")


@pytest.mark.parametrize("command", [
    "medvlm eval-vlm W --base-url http://user:pa55word@h/v1?api_key=qsecret123 --extra-body "
    '{"token":"bodysecret99"}',
    "medvlm consistency W --base-url=user:pa55word@h:8000/v1 "
    '--extra-body={"a": {"password": "bodysecret99"}}',
    'medvlm eval-vlm W --extra-body {"token": "bodysecret99", "cut',  # not a whole JSON object
])
def test_a_run_json_written_unmasked_is_shown_masked(tmp_path, capsys, command):
    """A run.json from before masking (or edited by hand): the report and ``config dump`` mask it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({
        "kind": "vlm", "name": "r", "command": command,
        "config": {"model": "m", "backend": "openai", "base_urls": ["http://u:pa55word@h/v1?api_key=qsecret123"],
                   "extra_body": {"password": "bodysecret99", "nested": {"token": "tok123456"}}}}))
    (run / "predictions.csv").write_text("patient_id,cohort,label,pred,score\nP0,test,0,0,0.1\n")
    assert invoke(["report", str(run), "--out", str(tmp_path / "report.html")]) == 0
    assert invoke(["config", "dump", str(run)]) == 0
    printed = capsys.readouterr()
    html = (tmp_path / "report.html").read_text()
    for secret in ("pa55word", "qsecret123", "bodysecret99", "tok123456"):
        assert secret not in html and secret not in printed.out + printed.err, secret
    assert "medvlm " in html and "***" in printed.out


@pytest.mark.parametrize("info", [
    {"kind": "vlm", "config": {"base_urls": ["http://u:pw123456@h/v1"],
                               "extra_body": {"password": "hunter22", "nested": {"token": "tok123456"}}}},
    {"kind": "vlm", "config": {"base_urls": "http://u:pw123456@h/v1?key=hunter22", "backend": "openai",
                               "extra_body": {"x": [{"auth": {"a": "tok123456"}}]}}},
    {"kind": "consistency", "config": {"base_urls": ["u:pw123456@h:8000/v1"], "backend": "openai",
                                       "extra_body": {"client_secret": "hunter22",
                                                      "api-token": "tok123456"}}},
])
def test_config_dump_masks_credentials(tmp_path, capsys, info):
    (tmp_path / "run.json").write_text(json.dumps(info))
    assert invoke(["config", "dump", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for secret in ("pw123456", "hunter22", "tok123456"):
        assert secret not in out, out
    assert "***" in out and yaml.safe_load(out)


# ------------------------------------------------------------------ encoded and partial echoes
PARTIAL_KEY = "sk-SECRETKEY-12345abcdef"


def _b64(text: str, *, urlsafe: bool = False, pad: bool = True) -> str:
    import base64

    out = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(text.encode()).decode()
    return out if pad else out.rstrip("=")


ECHOES = {
    "Basic header of user:password": lambda: "Basic " + _b64("user:pa55word"),
    "key in base64": lambda: _b64(PARTIAL_KEY),
    "key in base64 unpadded": lambda: _b64(PARTIAL_KEY, pad=False),
    "key in urlsafe base64": lambda: _b64(PARTIAL_KEY + "??>", urlsafe=True),
    "Bearer header in base64": lambda: _b64("Authorization: Bearer " + PARTIAL_KEY),
    "key at offset 1 of a base64 blob": lambda: _b64("x" + PARTIAL_KEY + "yz"),
    "password in base64": lambda: _b64("pa55word"),
    "partial key with stars": lambda: "sk-SECRETKEY-12345ab****",
    "partial key with stars and its end": lambda: "sk-SECRETKEY-12345ab************cdef",
    "partial key with an ellipsis": lambda: "sk-SECRETKEY-1234…",
    "partial key with three dots": lambda: "sk-SECRETKEY-12345...",
    "partial key ending a word": lambda: "sk-SECRETKEY-12345a is not valid",
    "partial key at the end": lambda: "key: sk-SECRETKEY",
}


@pytest.mark.parametrize("echo", list(ECHOES))
@pytest.mark.parametrize("command", ["eval-vlm", "consistency"])
def test_encoded_and_partial_echoes_are_masked(vlm_work, tmp_path, capsys, monkeypatch, fake_server, echo,
                                               command):
    monkeypatch.setenv("OPENAI_API_KEY", PARTIAL_KEY)
    text = ECHOES[echo]()
    fake_server.behave = _echo("500 error body", text, fake_server)
    url = fake_server.url.replace("http://", "http://user:pa55word@")
    out = tmp_path / "run"
    code, printed = _run_and_report(capsys, _args(command, vlm_work, out, url), out, tmp_path)
    assert code == 1
    assert fake_server.headers[0]["Authorization"] == "Basic " + _b64("user:pa55word")  # httpx: URL wins
    secret = text.split()[1] if text.startswith("Basic ") else text
    secret = secret.replace(" is not valid", "").replace("key: ", "")
    _assert_nowhere(secret, tmp_path, printed)
    assert "***" in (out / "failures.csv").read_text()


def test_the_basic_header_httpx_sends_is_the_one_masked(fake_server, tmp_path, vlm_work, capsys):
    url = fake_server.url.replace("http://", "http://user:pa55word@")
    fake_server.behave = lambda body, n: (fake_server.default(body, n) if n == 1
                                          else (500, {"echo": dict(fake_server.headers[-1])}, 0))
    out = tmp_path / "run"
    code, printed = _run_and_report(capsys, _args("eval-vlm", vlm_work, out, url), out, tmp_path)
    assert code == 1
    sent = fake_server.headers[0]["Authorization"]
    assert sent == "Basic " + _b64("user:pa55word")
    _assert_nowhere(sent.split()[1], tmp_path, printed)


@pytest.mark.parametrize(("text", "kept"), [
    ("sk-SECRETKEY-99 is another key", "sk-SECRETKEY-99"),  # shares 13 characters, then differs
    ("keys look like sk-proj-...", "sk-proj-..."),  # not a prefix of this key
    ("sk-SECR*** (7 characters)", "sk-SECR***"),  # PREFIX_MIN-1 characters of the key, then stars
    ("xsk-SECRETKEY-12345 glued to a word", "xsk-SECRETKEY-12345"),
    ("sk-SECRETKEY-12345abX", "sk-SECRETKEY-12345abX"),  # the token goes on with another character
    ("c2stU0VDUkVU", "c2stU0VDUkVU"),  # base64 of the first 9 characters only
    ("answer: Choice: 1 Reasoning: the lesion enhances", "Choice: 1 Reasoning: the lesion enhances"),
])
def test_partial_and_encoded_masking_keeps_other_text(text, kept):
    from medvlm.vlm._secrets import Redactor

    redactor = Redactor([PARTIAL_KEY, "pa55word"])
    redactor.add(["user:pa55word"], encoded_only=True)
    assert kept in redactor(text)
    assert redactor("user:pa55word") == "user:***"  # the pair itself: only its password is a secret
