"""Adversarial command lines (issue 14, classes 9, 17, 18): output paths that cannot be written, Ctrl-C,
``run --out`` relative to the current folder. Every refusal is one line on stderr and exit status 2,
before any work starts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medvlm.cli import invoke

# Each command with an output path, as {OUT} in its arguments; {WORK} is a prepared work folder.
COMMANDS = {
    "synth": ["synth", "{OUT}"],
    "prepare": ["prepare", "{DATA}", "--out", "{OUT}"],
    "split": ["split", "{OUT}"],
    "train-cnn": ["train-cnn", "{WORK}", "--out", "{OUT}", "--epochs", "1"],
    "eval-vlm": ["eval-vlm", "{WORK}", "--out", "{OUT}", "--backend", "transformers", "--model", "m"],
    "consistency": ["consistency", "{WORK}", "--out", "{OUT}", "--backend", "transformers", "--model", "m"],
    "finetune": ["finetune", "{WORK}", "--out", "{OUT}", "--base-model", "m"],
    "make-tiny-vlm": ["make-tiny-vlm", "{OUT}"],
    "report": ["report", "{WORK}", "--out", "{OUT}/report.html"],
    "demo": ["demo", "--out", "{OUT}"],
}


def _args(cmd: str, out: Path, work: Path, data: Path) -> list[str]:
    return [a.replace("{OUT}", str(out)).replace("{WORK}", str(work)).replace("{DATA}", str(data))
            for a in COMMANDS[cmd]]


@pytest.mark.parametrize("where", ["out is a file", "parent is a file"])
@pytest.mark.parametrize("cmd", list(COMMANDS))
def test_an_output_path_in_the_way_is_one_line_and_exit_2(tmp_path, capsys, prepared_work, synth_dir,
                                                          cmd, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker if where == "out is a file" else blocker / "sub"
    if cmd == "report" and where == "out is a file":
        out = tmp_path  # report --out is a file: give it a folder instead
        args = ["report", str(prepared_work), "--out", str(out)]
    else:
        args = _args(cmd, out, prepared_work, synth_dir)
    assert invoke(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medvlm: error: ") and "\n" not in err, err
    assert str(blocker.name) in err or str(tmp_path) in err
    assert blocker.read_text() == "not a folder"  # nothing written over it


def _as_nobody() -> list[str]:
    """A prefix running a command as an unprivileged user (root may write into read-only folders)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:  # pragma: no cover - util-linux is part of every Debian
        pytest.fail("running as root without setpriv: cannot test read-only folders")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def world(prepared_work, synth_dir):
    """A world-readable copy of the prepared work and the cohort, and a read-only folder, outside
    pytest's own (private) temporary tree."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="medvlm-ro-"))
    shutil.copytree(prepared_work, root / "work")
    shutil.copytree(synth_dir, root / "data")
    (root / "ro").mkdir()
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    os.chmod(root / "ro", 0o555)
    yield root
    os.chmod(root / "ro", 0o755)
    shutil.rmtree(root, ignore_errors=True)


def test_an_unreachable_parent_is_named(tmp_path):
    from medvlm._io import check_out_dir
    from medvlm.errors import ConfigError

    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    os.chmod(locked, 0o000)
    try:
        code = subprocess.run([*_as_nobody(), sys.executable, "-c", (
            "import sys; from medvlm._io import check_out_dir\n"
            f"check_out_dir({str(locked / 'inner' / 'run')!r})")], capture_output=True, text=True,
            timeout=120, cwd="/")
    finally:
        os.chmod(locked, 0o755)
    assert code.returncode != 0 and "ConfigError" in code.stderr
    assert "permission denied" in code.stderr.lower()
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_out_dir(Path(__file__))


@pytest.mark.parametrize("cmd", ["synth", "prepare", "train-cnn", "eval-vlm", "consistency", "finetune",
                                 "make-tiny-vlm", "report", "demo"])
def test_a_read_only_output_folder_is_one_line_and_exit_2(world, cmd):
    out = world / "ro" / "run"
    args = _args(cmd, out, world / "work", world / "data")
    env = {**os.environ, "HOME": str(world), "MPLCONFIGDIR": str(world / "ro")}
    proc = subprocess.run([*_as_nobody(), sys.executable, "-m", "medvlm", *args], capture_output=True,
                          text=True, timeout=300, env=env, cwd=world)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert err[-1].startswith("medvlm: error: ") and "not writable" in err[-1], proc.stderr
    assert "Traceback" not in proc.stderr
    assert list((world / "ro").iterdir()) == []


def test_an_os_error_during_work_is_one_line_naming_the_path(tmp_path, capsys, synth_dir):
    work = tmp_path / "work"
    work.mkdir()
    (work / "volumes").write_text("a file where prepare makes its volumes folder")
    assert invoke(["prepare", str(synth_dir), "--out", str(work), "--shape", "8", "8", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(work / "volumes") in err and "File exists" in err


def test_run_out_is_relative_to_the_current_folder(tmp_path, monkeypatch):
    exp = tmp_path / "configs" / "EXPERIMENT.yaml"
    exp.parent.mkdir()
    exp.write_text("out: from-file\ndata: {synthetic: {patients: 8}}\nvlm: [{name: v, model: tiny}]\n")
    cwd = tmp_path / "here"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    seen = {}

    def fake_run(config, *, out, base_dir, force):
        seen["out"], seen["base"] = out, base_dir

    monkeypatch.setattr("medvlm.cli.study._run", fake_run)
    assert invoke(["run", str(exp), "--out", "rel"]) == 0
    assert seen["out"] == cwd / "rel" and seen["base"] == exp.parent
    from medvlm.experiment import load_experiment

    config, base = load_experiment(exp)
    assert (base / config.out).resolve() == exp.parent / "from-file"  # the file's own out: by the file


def test_ctrl_c_prints_the_resume_line_and_exits_130(tmp_path):
    # Ctrl-C as a terminal delivers it: SIGINT at its default, even when this suite runs where it is
    # ignored (a background job `cmd &`, an xdist worker), which a child would inherit and never see
    proc = subprocess.Popen([sys.executable, "-m", "medvlm", "synth", str(tmp_path / "c"),
                             "--patients", "200", "--size", "full"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    # the command is at work: its first volume is written (waiting for the folder alone let a SIGINT end
    # the interpreter by the signal once in CI, rc -2; the cause is not pinned down, see the closing note)
    while not any((tmp_path / "c").rglob("*.nii*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # never left running (200 full-size patients) when the assertion fails
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == ("medvlm: interrupted; finished work is kept, rerun the same "
                                            "command to resume")
    assert "Traceback" not in err
