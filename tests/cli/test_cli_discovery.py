"""`medvlm --version`, `medvlm list ...` and the option walk: every option of every command has help and
a plain metavar."""

from __future__ import annotations

import json
import re

import pytest

from medvlm.cli import command, invoke


def test_version_prints_the_package_version(capsys):
    from medvlm import __version__

    assert invoke(["--version"]) == 0
    assert capsys.readouterr().out == f"medvlm {__version__}\n"


@pytest.mark.parametrize(("what", "expected"), [
    ("backends", ["mock", "openai", "transformers"]),
    ("models", ["densenet121", "densenet2d", "resnet18", "resnet2d", "small3d"]),
    ("tasks", ["brats-grading", "brats-tumour"]),
])
def test_list_names_what_the_registries_hold(capsys, what, expected):
    assert invoke(["list", what, "--json"]) == 0
    names = [row["name"] for row in json.loads(capsys.readouterr().out)]
    for name in expected:  # other engineers may register more; these are built in
        assert name in names
    assert names == sorted(names) or what == "tasks"
    assert invoke(["list", what]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == names


def test_list_prompts_gives_each_built_in_prompt_and_its_tasks(capsys):
    from medvlm.vlm.prompts import builtin_prompts, load_prompt

    assert invoke(["list", "prompts", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == builtin_prompts()
    assert rows["seed"]["sha"] == load_prompt("seed").sha
    assert "brats-grading" in rows["seed"]["tasks"] and "brats-tumour" in rows["tumour"]["tasks"]
    assert rows["seed"]["text"].startswith("Classify the brain scan as Low Grade Glioma (0)")
    assert invoke(["list", "prompts"]) == 0
    seed_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("seed "))
    assert "Classify the brain scan" in seed_line and "(tasks: brats-grading)" in seed_line


def test_list_of_an_unknown_thing_is_one_line_with_a_suggestion(capsys):
    assert invoke(["list", "promts"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Did you mean 'prompts'?" in err


def _walk(cmd, path=()):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _walk(sub, (*path, name))


#: an upper-case word or a few, separated by | , : = or spaces; "..." after an argument taking several
SANE_METAVAR = re.compile(r"^[A-Z][A-Za-z0-9_]*([|,:= ][A-Za-z0-9_=]+)*(\.\.\.)?$")


def test_every_option_of_every_command_has_help_and_a_plain_metavar():
    from typer._click import Context

    root = command()
    seen = 0
    for path, cmd in _walk(root):
        ctx = Context(cmd, info_name=" ".join(path) or "medvlm")
        for param in cmd.params:
            if getattr(param, "hidden", False):
                continue
            where = f"medvlm {' '.join(path)} {param.name}"
            assert (param.help or "").strip(), f"{where}: no help"
            record = param.get_help_record(ctx)
            assert record is not None, where
            shown = record[0]
            for odd in ("{", "}", "<", ">", "list[", "[str]"):
                assert odd not in shown, f"{where}: {shown!r}"
            if getattr(param, "is_flag", False):
                continue
            assert param.metavar and SANE_METAVAR.match(param.metavar), f"{where}: metavar {param.metavar!r}"
            seen += 1
    assert seen > 100  # the walk reached the commands' options


def test_usage_lines_show_arguments_plainly(capsys):
    assert invoke(["eval-vlm", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage: medvlm eval-vlm [OPTIONS] WORK" in out
    assert "--fold N|all" in out and "--limit N" in out and "--base-url URL" in out
    assert invoke(["report", "--help"]) == 0
    assert "Usage: medvlm report [OPTIONS] RUNS..." in capsys.readouterr().out


def test_fold_has_one_meaning_everywhere():
    from typer._click import Context

    helps = set()
    for path, cmd in _walk(command()):
        for param in cmd.params:
            if "--fold" in getattr(param, "opts", []):
                helps.add(param.help)
                assert param.metavar == "N|all", path
                assert param.get_help_record(Context(cmd))[0] == "--fold N|all"
    assert len(helps) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["finetune", "W", "--out", "{out}", "--base-model", "m", "--fold", "all"],
     "--fold all: finetune trains one adapter on one fold"),
    (["eval-vlm", "W", "--out", "{out}", "--model", "m", "--fold", "all", "--cohort", "val"],
     "--fold all --cohort val: eval-vlm reads the val cohort of one fold"),
    (["eval-vlm", "W", "--out", "{out}", "--model", "m", "--fold", "all", "--shots", "2"],
     "--fold all --shots 2: the examples come from the training cohort of one fold; give --fold N"),
    (["eval-vlm", "W", "--out", "{out}", "--model", "m", "--fold", "one"],
     "--fold must be a fold number (from 0) or 'all', got 'one'"),
    (["consistency", "W", "--out", "{out}", "--model", "m", "--orientations", "axial,coronal"],
     "consistency asks about one image, so one orientation"),
    (["consistency", "W", "--out", "{out}", "--model", "m", "--orientations", "axial", "--orientation",
      "axial"], "--orientations and --orientation (its old spelling) are both given"),
])
def test_fold_and_orientation_mistakes_are_one_line(tmp_path, capsys, args, message):
    args = [a.replace("{out}", str(tmp_path / "out")).replace("W", str(tmp_path)) if a in ("W", "{out}")
            else a for a in args]
    assert invoke(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_metavar_falls_back_to_the_click_type_without_typer_annotations():
    """Older typer (as in a GPU image) keeps no ``type_descriptor`` on its options: the metavar then
    comes from click's type (INTEGER, FLOAT, a tuple's members, TEXT for strings)."""
    import click

    from medvlm.cli._help import _param_metavar, tidy_help

    cmd = click.Command("x", params=[
        click.Option(["--epochs"], type=int), click.Option(["--lr-min"], type=float),
        click.Option(["--size"], type=(int, int, int)), click.Option(["--name"], type=str),
        click.Option(["--lr"], type=float)])
    assert not hasattr(cmd.params[0], "type_descriptor")
    tidy_help(cmd)
    assert [p.metavar for p in cmd.params] == ["INTEGER", "FLOAT", "INTEGER INTEGER INTEGER", "TEXT", "FLOAT"]
    assert _param_metavar(click.Option(["--flag-value"], type=click.Path())) == "PATH"
