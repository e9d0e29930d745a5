"""Assertions shared by the adversarial tests: what a user sees when their input is bad."""

from __future__ import annotations


def one_line_error(capsys, *needles: str) -> str:
    """The captured stderr is exactly one ``medvlm: error:`` line (no traceback) containing ``needles``."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("medvlm: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def warnings_only(err: str) -> list[str]:
    """The ``medvlm: warning:`` lines of ``err``; fails when stderr holds anything else."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("medvlm: warning: ") for line in lines), err
    return lines


def last_line_error(capsys, *needles: str) -> str:
    """For commands that report progress on stderr (train-cnn, finetune): no traceback, and the one
    ``medvlm: error:`` line is the last line, containing ``needles``."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("medvlm: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]
