"""``medvlm demo`` and ``medvlm run EXPERIMENT.yaml``: the whole study in one command."""

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
    force: bool = typer.Option(False, "--force", help="Run every stage again (each still resumes)."),
) -> None:
    """The whole study on embedded defaults: synthetic cohort -> prepare -> split -> CNN -> tiny stand-in
    VLM (log-probs, three orientations) -> consistency -> LoRA fine-tune -> its evaluation -> report.

    The tiny VLM is randomly initialised: a stand-in for a real one, its answers mean nothing. Rerunning
    with the same --out skips finished stages.
    """
    from medvlm.experiment import demo_config

    config = demo_config(patients=patients, seed=seed, size=size, workers=workers)
    _run(config, out=out, base_dir=Path.cwd(), force=force)


@app.command("run")
def run_cmd(
    experiment: Path = typer.Argument(..., help="EXPERIMENT.yaml (see examples/)."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: the file's `out`)."),
    force: bool = typer.Option(False, "--force", help="Run every stage again (each still resumes)."),
    check: bool = typer.Option(False, "--check", help="Only validate the file and list its stages."),
) -> None:
    """The whole study as one config describes it (unknown keys are rejected with a "did you mean")."""
    from rich.console import Console

    from medvlm.experiment import load_experiment

    config, base = load_experiment(experiment)
    if check:
        from medvlm.study import _Paths, plan_stages

        target = (out or Path(config.out))
        paths = _Paths(config, (target if target.is_absolute() else base / target).resolve(), base)
        Console().print(f"{experiment}: valid; stages: "
                        + ", ".join(s.name for s in plan_stages(config, paths, progress=False)))
        return
    from medvlm.experiment import check_devices

    check_devices(config, source=str(experiment))
    _run(config, out=out, base_dir=base, force=force)


def _run(config, *, out: Path | None, base_dir: Path, force: bool) -> None:
    from rich.console import Console

    from medvlm.study import print_summary, run_experiment

    console = Console(stderr=True)
    result = run_experiment(config, out=out, base_dir=base_dir, console=console, force=force)
    print_summary(result, Console())
    if result.exit_code:
        Console(stderr=True).print("Some requests failed; rerun the same command to retry only those.")
        raise typer.Exit(result.exit_code)
