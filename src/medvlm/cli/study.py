"""``medvlm demo``: the whole study on embedded defaults (today: synth -> prepare -> split)."""

from __future__ import annotations

from pathlib import Path

import typer

from medvlm.cli._app import app


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("medvlm-demo"), "--out", help="Folder for everything the demo writes."),
    patients: int = typer.Option(40, "--patients", help="Synthetic patients."),
    seed: int = typer.Option(0, "--seed", help="Seed of the cohort and the split."),
    size: str = typer.Option("medium", "--size", help="Synthetic geometry: small, medium or full."),
    workers: int = typer.Option(1, "--workers", help="Patients prepared in parallel processes."),
) -> None:
    """Run the study on a synthetic cohort and print a summary (rerun with the same --out resumes)."""
    from pydantic import ValidationError
    from rich.console import Console

    from medvlm.errors import ConfigError
    from medvlm.study import DemoConfig, print_summary, run_demo

    try:
        config = DemoConfig(patients=patients, seed=seed, size=size, workers=workers)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"--{'-'.join(map(str, err['loc']))}: {err['msg']}") from exc
    console = Console(stderr=True)
    result = run_demo(out, config, console=console)
    print_summary(result, Console())
