"""One vocabulary for the CLI and EXPERIMENT.yaml: option names accepted, old field names as aliases, all
unknown keys in one message, and ``medvlm config dump RUN``."""

from __future__ import annotations

import json

import pytest
import yaml

from medvlm.cli import invoke
from medvlm.errors import ConfigError
from medvlm.experiment import parse_experiment

BASE = {"name": "x", "data": {"synthetic": {"patients": 8}}}


@pytest.mark.parametrize("section, given, field, value", [
    ("vlm", {"base_url": "http://h:1/v1"}, "base_urls", ["http://h:1/v1"]),
    ("vlm", {"base-url": ["http://a/v1", "http://b/v1"]}, "base_urls", ["http://a/v1", "http://b/v1"]),
    ("vlm", {"bootstrap": 250}, "n_boot", 250),
    ("vlm", {"timeout": 12.5}, "timeout_s", 12.5),
    ("vlm", {"tie-break": "lgg"}, "tie_break", "lgg"),
    ("vlm", {"max-new-tokens": 7}, "max_new_tokens", 7),
    ("consistency", {"patient": "BraTS20_Training_001"}, "patients", ["BraTS20_Training_001"]),
    ("consistency", {"temperature": 0.6}, "temperatures", [0.6]),
    ("consistency", {"slice": 40}, "slice_index", 40),
    ("consistency", {"prompt": ["seed"]}, "prompts", ["seed"]),
    ("vlm", {"n_boot": 300}, "n_boot", 300),  # the old spelling still works
])
def test_option_names_and_old_field_names_are_accepted(section, given, field, value):
    config = parse_experiment({**BASE, section: [{"name": "r", "model": "tiny", **given}]})
    assert getattr(getattr(config, section)[0], field) == value


def test_finetune_evaluate_takes_option_names_too():
    config = parse_experiment({**BASE, "finetune": [{"name": "f", "base-model": "tiny",
                                                     "evaluate": {"bootstrap": 100, "tie-break": "lgg"}}]})
    assert config.finetune[0].evaluate == {"n_boot": 100, "tie_break": "lgg"}


def test_an_option_and_its_old_name_together_are_refused():
    with pytest.raises(ConfigError, match="both set 'n_boot'"):
        parse_experiment({**BASE, "vlm": [{"name": "r", "model": "tiny", "bootstrap": 1, "n_boot": 2}]})


def test_every_unknown_key_is_named_in_one_message():
    bad = {**BASE, "vlm": [{"name": "r", "model": "tiny", "modle": "x", "scorng": "logprobs"}],
           "cnn": [{"name": "c", "epochz": 2}]}
    with pytest.raises(ConfigError) as info:
        parse_experiment(bad, source="x.yaml")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("x.yaml: 3 unknown keys: ")
    for where, hint in (("cnn.0.epochz", "epochs"), ("vlm.0.modle", "model"), ("vlm.0.scorng", "scoring")):
        assert f"'{where}'. Did you mean '{hint}'?" in msg


def test_config_dump_reproduces_a_run(tmp_path, capsys):
    run = tmp_path / "zero-shot"  # the section's name is the folder's (tests/report/test_report_run_names.py)
    run.mkdir()
    (run / "run.json").write_text(json.dumps({
        "kind": "vlm", "name": "zero-shot",
        "config": {"backend": "openai", "model": "llama3.2-vision", "base_urls": ["http://h:11434/v1"],
                   "n_boot": 500, "timeout_s": 120.0, "scoring": "generate", "prompt_sha": "abc",
                   "concurrency": 4}}))
    assert invoke(["config", "dump", str(run)]) == 0
    dumped = yaml.safe_load(capsys.readouterr().out)
    section = dumped["vlm"][0]
    assert section["name"] == "zero-shot" and section["base_url"] == ["http://h:11434/v1"]
    assert section["bootstrap"] == 500 and "prompt_sha" not in section and "n_boot" not in section
    from medvlm.experiment import VLMRun

    default_timeout = VLMRun.model_fields["timeout_s"].default
    assert ("timeout" in section) == (default_timeout != 120.0)
    config = parse_experiment({**BASE, **dumped})  # the dump is a valid section
    assert config.vlm[0].n_boot == 500 and config.vlm[0].model == "llama3.2-vision"


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "run.json is not a JSON object"),
    ("{not json", "not a readable run.json"),
    ('{"kind": "weird"}', "no EXPERIMENT.yaml section"),
])
def test_config_dump_bad_run_json_is_one_line(tmp_path, capsys, content, message):
    (tmp_path / "run.json").write_text(content)
    assert invoke(["config", "dump", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_fold_all_follows_the_commands_rules():
    run = {"name": "r", "backend": "mock", "model": "m"}
    assert parse_experiment({**BASE, "vlm": [{**run, "fold": "all"}]}).vlm[0].fold == 0
    assert parse_experiment({**BASE, "consistency": [{**run, "patient": "P1", "fold": "all"}]}
                            ).consistency[0].fold == 0
    with pytest.raises(ConfigError, match=r"^x: vlm\.0\.fold: --fold all --cohort val: eval-vlm reads "
                       r"the val cohort of one fold; run it once per fold"):
        parse_experiment({**BASE, "vlm": [{**run, "fold": "all", "cohort": "val"}]}, source="x")
    with pytest.raises(ConfigError, match=r"^x: vlm\.0\.fold: --fold all --shots 2: the examples come from"):
        parse_experiment({**BASE, "vlm": [{**run, "fold": "all", "shots": [0, 2]}]}, source="x")


def test_unknown_key_lists_and_suggests_option_names():
    with pytest.raises(ConfigError, match=r"'vlm\.0\.bootstrapp'\. Did you mean 'bootstrap'\?$"):
        parse_experiment({**BASE, "vlm": [{"name": "r", "model": "m", "bootstrapp": 3}]})
    with pytest.raises(ConfigError) as info:
        parse_experiment({**BASE, "vlm": [{"name": "r", "model": "m", "zzzzzzzz": 3}]})
    allowed = str(info.value).split("Allowed: ")[1].split(", ")
    assert {"bootstrap", "base_url", "timeout"} <= set(allowed)
    assert not {"n_boot", "base_urls", "timeout_s"} & set(allowed)


def test_a_shots_sweep_needs_a_name():
    for shots in ([1], 1):
        with pytest.raises(ConfigError, match=r"^x: vlm\.0\.name: Field required$"):
            parse_experiment({**BASE, "vlm": [{"backend": "mock", "model": "m", "shots": shots}]}, source="x")
