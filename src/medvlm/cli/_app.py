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
