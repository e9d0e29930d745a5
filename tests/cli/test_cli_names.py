"""One name per option in EXPERIMENT.yaml too: a consistency section takes `orientations` (the command's
option) as well as the field `orientation`, and `limit`."""

from __future__ import annotations

import pytest

from medvlm.config_keys import dump_section
from medvlm.errors import ConfigError
from medvlm.experiment import parse_experiment

BASE = {"data": {"synthetic": {"patients": 4}}}


@pytest.mark.parametrize("value", ["coronal", ["coronal"]])
def test_consistency_takes_orientations_like_the_command(value):
    config = parse_experiment({**BASE, "consistency": [{"name": "c", "model": "tiny", "orientations": value,
                                                        "limit": 3}]})
    assert config.consistency[0].orientation == "coronal" and config.consistency[0].limit == 3


def test_both_spellings_in_one_run_are_one_message():
    with pytest.raises(ConfigError, match="'orientations' and another key both set 'orientation'"):
        parse_experiment({**BASE, "consistency": [{"name": "c", "model": "tiny", "orientation": "axial",
                                                   "orientations": "axial"}]})


def test_several_orientations_for_consistency_are_refused():
    with pytest.raises(ConfigError, match=r"consistency\.0\.orientation"):
        parse_experiment({**BASE, "consistency": [{"name": "c", "model": "tiny",
                                                   "orientations": ["axial", "coronal"]}]})


def test_config_dump_writes_the_option_names_back():
    info = {"kind": "consistency", "name": "c",
            "config": {"model": "m", "orientation": "coronal", "limit": 2}}
    assert dump_section(info) == {"consistency": [{"name": "c", "model": "m", "orientations": "coronal",
                                                   "limit": 2}]}
    info = {"kind": "vlm", "name": "v", "config": {"model": "m", "limit": None}}
    assert dump_section(info) == {"vlm": [{"name": "v", "model": "m"}]}
