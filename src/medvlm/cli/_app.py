"""The typer application every command module registers on."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    name="medvlm",
    help="Compare general VLMs, fine-tuned VLMs and CNNs on medical imaging (BraTS 2020 glioma grading). "
    "Classes and labels: `medvlm tasks`. Contract: docs/cli.md.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from medvlm import __version__

        typer.echo(f"medvlm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", help="Show third-party library warnings, log lines "
                                 "and weight-loading progress bars (hidden by default)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the medvlm version and exit."),
) -> None:
    """medvlm: VLM vs fine-tuned VLM vs CNN, reproducibly, in one command."""
    from medvlm._console import quiet_noise

    quiet_noise(verbose)


def _param_name(param: typer.CallbackParam) -> str:
    opts = [o for o in (param.opts or []) if o.startswith("--")]
    return opts[0] if opts else (param.name or "OUT").upper()


def out_folder(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """Option callback: the output folder can be written (checked before any work starts)."""
    from medvlm._io import check_out_dir

    return None if value is None else check_out_dir(value, _param_name(param))


def out_file(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """Option callback: the output file can be written (checked before any work starts)."""
    from medvlm._io import check_out_file

    return None if value is None else check_out_file(value, _param_name(param))


#: the one meaning of --fold, in every command that has it
FOLD_HELP = ("Fold of splits.json (from 0), or 'all': every fold (train-cnn: cross-validation; eval-vlm and "
             "consistency: any fold with --cohort test or all, where the fold does not matter).")


def parse_fold(value: str | int, *, cohort: str | None = None, command: str = "",
               shots: int = 0) -> int | str:
    """``--fold``: a fold number (0 or more) or ``"all"``; ConfigError (one line) otherwise.

    ``cohort``: the command picks one cohort of one fold (eval-vlm, consistency): ``all`` is accepted
    where the fold does not change the patients (``test``, ``all``) and means fold 0 there; with
    ``train``/``val`` it is an error saying to run each fold, and so it is with ``shots`` (few-shot
    examples come from one fold's training cohort).

    >>> parse_fold("2"), parse_fold("all"), parse_fold("all", cohort="test")
    (2, 'all', 0)
    """
    from medvlm.errors import ConfigError

    text = str(value).strip().lower()
    if text == "all":
        if cohort is None:
            return "all"
        if shots:
            raise ConfigError(f"--fold all --shots {shots}: the examples come from the training cohort of "
                              "one fold; give --fold N")
        if cohort in ("test", "all"):
            return 0
        raise ConfigError(f"--fold all --cohort {cohort}: {command} reads the {cohort} cohort of one fold; "
                          "run it once per fold (--fold 0, --fold 1, ...)")
    if not text.isdigit():
        raise ConfigError(f"--fold must be a fold number (from 0) or 'all', got {value!r}")
    return int(text)
