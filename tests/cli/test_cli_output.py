"""Output that survives a log file: piped tables are plain and wide (no "…" cells, no escape codes), no
progress bar frames in stdout, one summary line per command; third-party noise off unless --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
from tests.vlm.conftest import write_tiny_work


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return write_tiny_work(tmp_path_factory.mktemp("piped"))


def _piped(args, tmp_path):
    """Run ``medvlm ARGS`` with stdout and stderr to files (as in a Slurm job), COLUMNS unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with open(out, "w") as fo, open(err, "w") as fe:
        code = subprocess.run([sys.executable, "-m", "medvlm", *args], stdout=fo, stderr=fe, env=env,
                              timeout=300, check=False).returncode
    return code, out.read_text(encoding="utf-8"), err.read_text(encoding="utf-8")


def test_a_piped_eval_vlm_table_is_whole_and_plain(work, tmp_path):
    code, out, err = _piped(["eval-vlm", str(work), "--out", str(tmp_path / "run"), "--backend", "mock",
                             "--model", "mock", "--bootstrap", "200"], tmp_path)
    assert code == 0, err
    assert "…" not in out and "\x1b[" not in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert set(rows) == {"axial", "coronal", "sagittal", "combined"}
    for line in rows.values():  # each row on one line, every CI whole ("[0.25, 1.00]")
        assert line.count("[") == 2 and line.count("]") == 2, line
    header = next(line for line in out.splitlines() if line.startswith("┃"))
    assert "orientation" in header and "specificity" in header
    assert max(len(line) for line in out.splitlines()) > 80  # not cut to 80 columns
    # one summary line; no progress-bar frame in stdout or stderr
    assert sum(line.startswith("calls 40 (sent 40, from cache 0)") for line in out.splitlines()) == 1
    assert not any(line.startswith("eval-vlm ") and "40/40" in line for line in (out + err).splitlines())


def test_consistency_prints_one_summary_line(work, tmp_path):
    code, out, err = _piped(["consistency", str(work), "--out", str(tmp_path / "c"), "--backend", "mock",
                             "--model", "mock", "--repeats", "3", "--limit", "1"], tmp_path)
    assert code == 0, err
    summary = [line for line in out.splitlines() if "calls 3 (sent 3" in line]
    assert len(summary) == 1 and summary[0].startswith("3 answers over 1 image(s)")
    assert "…" not in out and "ETA" not in out + err


def test_the_console_is_wide_and_plain_off_a_terminal():
    from rich.table import Table

    from medvlm._console import LOG_WIDTH, make_console

    console = make_console()  # pytest captures stdout: not a terminal
    assert console.width == LOG_WIDTH and console.color_system is None
    table = Table()
    for i in range(12):
        table.add_column(f"column number {i}")
    table.add_row(*[f"a long cell value {i} [0.25, 1.00]" for i in range(12)])
    with console.capture() as captured:
        console.print(table)
        console.rule("stage")
    text = captured.get()
    assert "…" not in text and "a long cell value 11 [0.25, 1.00]" in text
    assert text.splitlines()[-1].startswith("── stage ") and len(text.splitlines()[-1]) == 80


def _third_party_warning(module: str, category: type[Warning]) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        from medvlm._console import quiet_noise

        warnings.resetwarnings()
        warnings.simplefilter("always")
        quiet_noise(False)
        warnings.warn_explicit("noise", category, filename="x.py", lineno=1, module=module)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize(("module", "category", "shown"), [
    ("transformers.modeling_utils", FutureWarning, False),
    ("torch.nn.modules", DeprecationWarning, False),
    ("bitsandbytes.cextension", UserWarning, False),
    ("medvlm.metrics", FutureWarning, True),  # medvlm's own warnings are never filtered
    ("transformers.generation", RuntimeWarning, True),
])
def test_known_third_party_noise_is_filtered(monkeypatch, module, category, shown):
    for name in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(name, "x")  # restored (to unset) after the test
        monkeypatch.delenv(name)
    assert (_third_party_warning(module, category) == ["noise"]) is shown
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


def test_verbose_keeps_the_noise(monkeypatch, capsys):
    import logging

    from medvlm.cli import invoke

    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "x")
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY")
    logger = logging.getLogger("transformers")
    level = logger.level
    try:
        logger.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            assert invoke(["--verbose", "list", "backends"]) == 0
            assert "TRANSFORMERS_VERBOSITY" not in os.environ
            assert logger.level == logging.WARNING
            assert invoke(["list", "backends"]) == 0
            assert logger.level == logging.ERROR
    finally:
        logger.setLevel(level)
    assert "mock" in capsys.readouterr().out
