"""``medvlm demo`` and ``medvlm run EXPERIMENT.yaml``: the whole study in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medvlm.cli._app import app, out_folder


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("medvlm-demo"), "--out", callback=out_folder,
        help="Folder for everything the demo writes."),
    patients: int = typer.Option(40, "--patients", help="Synthetic patients."),
    seed: int = typer.Option(0, "--seed", help="Seed of the cohort and the split."),
    size: str = typer.Option("medium", "--size", help="Synthetic geometry: small, medium or full."),
    workers: int = typer.Option(1, "--workers", help="Patients prepared in parallel processes."),
    force: bool = typer.Option(False, "--force", help="Run every stage again (each still resumes)."),
) -> None:
    """The whole study on embedded defaults: synthetic cohort -> prepare -> split -> CNN -> tiny stand-in
    VLM (log-probs, three orientations) -> consistency -> LoRA fine-tune -> its evaluation -> report.

    The tiny VLM is a stand-in for a real one, trained only to answer in the study's format: its answers
    parse and carry no grade information. Rerunning with the same --out skips finished stages.
    """
    from medvlm.experiment import demo_config

    config = demo_config(patients=patients, seed=seed, size=size, workers=workers)
    _run(config, out=out, base_dir=Path.cwd(), force=force)


@app.command("run")
def run_cmd(
    experiment: Path = typer.Argument(..., help="EXPERIMENT.yaml (see examples/)."),
    out: Path = typer.Option(None, "--out", callback=out_folder,
        help="Output folder, relative to the current folder (default: the file's "
        "`out`, relative to the file's folder)."),
    force: bool = typer.Option(False, "--force", help="Run every stage again (each still resumes)."),
    check: bool = typer.Option(False, "--check", help="Only check: the file, its paths and servers; print "
                               "the stages, the output folder and the planned model calls (exit 2 with one "
                               "line per problem)."),
) -> None:
    """The whole study as one config describes it (unknown keys are rejected with a "did you mean")."""
    from medvlm.experiment import load_experiment

    config, base = load_experiment(experiment)
    if out is not None:
        out = out.expanduser().resolve()  # --out: from the current folder; the file's out: from the file's
    if check:
        _check(config, experiment=experiment, out=out, base=base)
        return
    from medvlm.experiment import check_devices

    check_devices(config, source=str(experiment))
    _run(config, out=out, base_dir=base, force=force)


def _check(config: Any, *, experiment: Path, out: Path | None, base: Path) -> None:
    """``run --check``: print the stages, output folder and planned calls; exit 2 on any problem."""
    from medvlm.experiment_check import check_experiment

    result = check_experiment(config, out=out, base_dir=base)
    if not result.problems:
        print(f"{experiment}: valid; stages: {', '.join(result.stages)}")
    else:
        print(f"{experiment}: {len(result.problems)} problem(s); stages: {', '.join(result.stages)}")
    print(f"output folder: {result.out}")
    known = [n for n in result.calls.values() if n is not None]
    if not result.calls:
        print("planned model calls: none (no run asks a VLM)")
    elif not result.work_ready:
        print(f"planned model calls: unknown until prepare ({len(result.calls)} runs ask a VLM: "
              f"{', '.join(result.calls)})")
    else:
        total = f"{sum(known)} in all" if len(known) == len(result.calls) else "some unknown"
        print(f"planned model calls: {total}; per run: "
              + ", ".join(f"{name} {'unknown' if n is None else n}" for name, n in result.calls.items()))
    for problem in result.problems:
        typer.echo(f"medvlm: error: {problem}", err=True)
    if result.problems:
        raise typer.Exit(2)


def _run(config, *, out: Path | None, base_dir: Path, force: bool) -> None:
    from medvlm._console import make_console
    from medvlm.study import run_experiment

    console = make_console(stderr=True)
    result = run_experiment(config, out=out, base_dir=base_dir, console=console, force=force)
    print_summary(result, make_console())
    if result.exit_code:
        make_console(stderr=True).print("Some requests failed; rerun the same command to retry only those.")
        raise typer.Exit(result.exit_code)


def print_summary(result: Any, console: Any) -> None:
    """A rich table: one row per stage with its status, time and key numbers; then the report's path."""
    from rich.table import Table

    table = Table(title=f"medvlm: {result.config.name} in {result.out}", title_justify="left")
    for column in ("stage", "status", "seconds", "result"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for record in result.stages:
        parts = []
        for key, value in record.summary.items():
            if key in ("skipped_reasons", "warnings", "reused") and not value:
                continue
            if isinstance(value, list):
                value = ", ".join(map(str, value))
            elif isinstance(value, float):
                value = f"{value:.3g}"
            parts.append(f"{key}: {value}")
        table.add_row(record.name, record.status, f"{record.seconds:.1f}", "; ".join(parts))
    console.print(table)
    if result.report is not None:
        console.print(f"Report: [bold]{result.report}[/bold]")


config_app = typer.Typer(help="EXPERIMENT.yaml helpers.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("dump")
def config_dump_cmd(
    run: Path = typer.Argument(..., help="A run folder (with its run.json) made by any medvlm command."),
) -> None:
    """Print the EXPERIMENT.yaml section that reproduces RUN (its options under the commands' names;
    defaults left out). Credentials are printed masked (``***``), also from a run.json that holds them."""
    import json

    import yaml

    from medvlm.cli._runs import require_run_folder
    from medvlm.config_keys import dump_section
    from medvlm.errors import DataError
    from medvlm.runinfo import display_name, renamed_note
    from medvlm.vlm._secrets import redact_record

    if run.name == "run.json" and run.is_file():  # RUN/run.json itself: its folder
        run = run.parent
    require_run_folder(run)
    path = run / "run.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable run.json ({exc})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: run.json is not a JSON object")
    note = renamed_note(run, redact_record(info))
    if note:
        typer.echo(f"medvlm: note: {note}", err=True)
    info = {**info, "name": display_name(run)}  # the section reproduces this folder, as named now
    section = redact_record(dump_section(redact_record(info)))  # base_url / extra_body: both names
    print(yaml.safe_dump(section, sort_keys=False, default_flow_style=False), end="")
