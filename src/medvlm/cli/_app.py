"""The typer application every command module registers on."""

from __future__ import annotations

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


@app.callback()
def _root() -> None:
    """medvlm: VLM vs fine-tuned VLM vs CNN, reproducibly, in one command."""
