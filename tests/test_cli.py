"""The command line as a whole: every contract command exists, and `--help` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medvlm.cli import main

CONTRACT_COMMANDS = ["synth", "prepare", "split", "train-cnn", "eval-vlm", "consistency", "make-tiny-vlm",
                     "finetune", "metrics", "compare", "report", "demo", "run", "sweep"]


def test_help_imports_no_heavy_library():
    code = ("import sys\nfrom medvlm.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'monai', 'peft', 'matplotlib', 'sklearn') "
            "if m in sys.modules]\nprint('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "HEAVY []" in out.stdout
    for command in CONTRACT_COMMANDS:
        assert command in out.stdout, command


@pytest.mark.parametrize("command", CONTRACT_COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit, match="^0$") as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "Usage: medvlm " + command in capsys.readouterr().out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit, match="^2$") as exc:
        main(["evaluate-vlm"])
    assert exc.value.code == 2
