"""``medvlm eval-vlm`` and ``medvlm make-tiny-vlm``: thin wrappers over :mod:`medvlm.vlm`."""

from __future__ import annotations

from pathlib import Path

import typer

from medvlm.cli._app import app


@app.command("make-tiny-vlm")
def make_tiny_vlm_cmd(
    out: Path = typer.Argument(..., help="Folder to write the model, tokenizer and processor to."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights (same seed, same model)."),
) -> None:
    """Write a tiny random Llama-3.2-Vision model (+ tokenizer, processor), built offline."""
    from medvlm.vlm.tiny import make_tiny_vlm

    path = make_tiny_vlm(out, seed=seed)
    typer.echo(f"tiny VLM written to {path} (load with from_pretrained)")
