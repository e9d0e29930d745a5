"""`medvlm run FILE --check`: paths and servers checked, the output folder and the planned model calls
printed; exit 2 with one line per problem."""

from __future__ import annotations

import importlib.util
import socket

import pytest
import yaml
from tests.vlm.conftest import FakeServer, write_tiny_work

from medvlm.cli import invoke


@pytest.fixture()
def server():
    s = FakeServer()
    yield s
    s.close()


def _write(tmp_path, body: dict) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "out": "study", **body}))
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MOCK_RUNS = {
    "vlm": [{"name": "v1", "backend": "mock", "model": "mock"},
            {"name": "v2", "backend": "mock", "model": "mock", "orientations": ["axial"], "repeats": 2,
             "limit": 2}],
    "consistency": [{"name": "c1", "backend": "mock", "model": "mock", "repeats": 5,
                     "temperature": [0.5, 1.0]}],
}


def test_check_before_prepare_prints_the_folder_and_unknown_calls(tmp_path, capsys):
    path = _write(tmp_path, {"data": {"synthetic": {"patients": 4}}, **MOCK_RUNS})
    assert invoke(["run", path, "--check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: valid; stages: data, prepare, split, v1, v2, c1, report"
    assert out[1] == f"output folder: {(tmp_path / 'study').resolve()}"
    assert out[2] == "planned model calls: unknown until prepare (3 runs ask a VLM: v1, v2, c1)"


def test_check_after_prepare_counts_the_planned_calls(tmp_path, capsys):
    write_tiny_work(tmp_path / "study")  # study/work: 4 test patients P000..P003
    path = _write(tmp_path, {"data": {"synthetic": {"patients": 4}}, **MOCK_RUNS})
    assert invoke(["run", path, "--check"]) == 0
    out = capsys.readouterr().out.splitlines()
    # v1: each patient's tumour spans 3 axial, 3 coronal and 4 sagittal slices -> 4 x 10 = 40
    # v2: the first 2 patients x 3 axial slices x 2 repeats = 12; c1: 4 images x 2 temperatures x 5 = 40
    assert out[2] == "planned model calls: 92 in all; per run: v1 40, v2 12, c1 40"


def test_the_planned_calls_are_the_calls_eval_vlm_makes(tmp_path, capsys):
    import json

    work = write_tiny_work(tmp_path / "study")
    path = _write(tmp_path, {"data": {"synthetic": {"patients": 4}}, "vlm": MOCK_RUNS["vlm"][:1]})
    assert invoke(["run", path, "--check"]) == 0
    assert "per run: v1 40" in capsys.readouterr().out
    assert invoke(["eval-vlm", str(work), "--out", str(tmp_path / "r"), "--backend", "mock", "--model",
                   "mock", "--bootstrap", "0", "--no-progress"]) == 0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["n_calls"] == 40


def test_check_of_a_served_model_passes_without_sending_work(tmp_path, capsys, server):
    path = _write(tmp_path, {"data": {"synthetic": {"patients": 4}}, "vlm": [
        {"name": "served", "backend": "openai", "base_url": server.url, "model": "llama3.2-vision"}]})
    assert invoke(["run", path, "--check"]) == 0
    assert server.bodies == []  # a listed model: GET /models only
    assert "output folder: " in capsys.readouterr().out


def test_check_of_an_unlisted_model_asks_one_token(tmp_path, capsys, server):
    server.models = []  # a gateway that lists nothing but serves the model
    path = _write(tmp_path, {"data": {"synthetic": {"patients": 4}}, "vlm": [
        {"name": "gw", "backend": "openai", "base_url": server.url, "model": "llama3.2-vision"}]})
    assert invoke(["run", path, "--check"]) == 0
    assert len(server.bodies) == 1 and server.bodies[0]["max_tokens"] == 1
    assert "image_url" not in str(server.bodies[0])


def test_a_model_the_server_does_not_serve_is_one_line(tmp_path, capsys, server):
    server.behave = lambda body, n: (404, {"object": "error", "message": f"The model `{body['model']}` does "
                                           "not exist.", "type": "NotFoundError"}, 0)
    path = _write(tmp_path, {"data": {"synthetic": {"patients": 4}}, "vlm": [
        {"name": "v", "backend": "openai", "base_url": server.url, "model": "qwen-nope"}]})
    assert invoke(["run", path, "--check"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"medvlm: error: vlm.0 (v): {server.url} does not serve model 'qwen-nope' (HTTP 404: The "
                   "model `qwen-nope` does not exist.); it lists: llama3.2-vision; check --model and "
                   "--base-url"]


def test_an_unreachable_server_and_a_missing_data_folder_are_one_line_each(tmp_path, capsys):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    path = _write(tmp_path, {"data": {"path": "nowhere"}, "vlm": [
        {"name": "v", "backend": "openai", "base_url": url, "model": "m"},
        {"name": "w", "backend": "openai", "base_url": url, "model": "m"}]})  # same server: checked once
    assert invoke(["run", path, "--check"]) == 2
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("medvlm: error: data.path: ") and "nowhere" in err[0]
    assert err[1] == (f"medvlm: error: vlm.0 (v): {url}: cannot reach the server (ConnectError); check "
                      "base_url and that the server is running")
    assert "output folder: " in captured.out  # the plan is printed all the same


def test_a_missing_prompt_file_and_model_folder_are_named(tmp_path, capsys):
    path = _write(tmp_path, {"data": {"synthetic": {"patients": 4}}, "vlm": [
        {"name": "v", "backend": "transformers", "model": "./models/none", "prompt": "prompts/mine.txt"}]})
    assert invoke(["run", path, "--check"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert any("vlm.0.prompt: " in e and "mine.txt: no such prompt file" in e for e in err)
    assert any("vlm.0.model ./models/none: no such folder" in e for e in err)


def test_options_the_commands_refuse_are_found_and_valid_is_not_printed(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    runs = [{"name": "few", "backend": "mock", "model": "mock", "shots": 2, "cohort": "train"},
            {"name": "mean", "backend": "mock", "model": "mock", "reducer": "mean_prob"}]
    if importlib.util.find_spec("litellm"):  # eval-vlm's own litellm checks, no request sent
        runs += [{"name": "nope", "backend": "litellm", "model": "foo/bar"},
                 {"name": "keyless", "backend": "litellm", "model": "anthropic/claude-x"}]
    path = _write(tmp_path, {"data": {"synthetic": {"patients": 4}}, "vlm": runs,
                             "consistency": [{"name": "c", "backend": "mock", "model": "mock", "shots": 1,
                                              "cohort": "all"}]})
    assert invoke(["run", path, "--check"]) == 2
    captured = capsys.readouterr()
    assert "valid" not in captured.out
    assert captured.out.splitlines()[0].startswith(f"{path}: {len(runs) + 1} problem(s); stages: ")
    err = captured.err.splitlines()
    assert len(err) == len(runs) + 1, err
    assert err[0].startswith("medvlm: error: vlm.0.shots: --shots 2 with --cohort train: ")
    assert err[1] == ("medvlm: error: vlm.1.reducer: --reducer mean_prob needs class probabilities: use "
                      "--scoring logprobs")
    if len(runs) == 4:
        assert err[2].startswith("medvlm: error: vlm.2.model: --model 'foo/bar': LiteLLM knows no provider")
        assert err[3].startswith("medvlm: error: vlm.3.model: --model anthropic/claude-x: the anthropic "
                                 "provider needs the environment variable ANTHROPIC_API_KEY")
    assert err[-1].startswith("medvlm: error: consistency.0.shots: --shots 1 with --cohort all: ")


def test_data_dependent_few_shot_refusals_after_prepare(tmp_path, capsys):
    runs = {"vlm": [{"name": "v", "backend": "mock", "model": "mock", "shots": 1}]}
    path = _write(tmp_path, {"data": {"synthetic": {"patients": 4}}, **runs})
    assert invoke(["run", path, "--check"]) == 0  # before prepare: nothing to check it against
    capsys.readouterr()
    write_tiny_work(tmp_path / "study")  # its split puts test patient P000 in fold 0's training cohort too
    assert invoke(["run", path, "--check"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("medvlm: error: vlm.0.shots: --shots 1: patient P000 is both evaluated and in "
                             "the training cohort of --fold 0")
