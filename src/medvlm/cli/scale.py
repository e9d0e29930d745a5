"""``medvlm sweep``: folds x learning rates of train-cnn or finetune as one Slurm (submitit) job array."""

from __future__ import annotations

from pathlib import Path

import typer

from medvlm.cli._app import app, out_folder


@app.command("sweep")
def sweep_command(
    work: Path = typer.Argument(..., help="Work folder written by `medvlm prepare` and `medvlm split`."),
    out: Path = typer.Option(..., "--out", callback=out_folder,
        help="Sweep folder: one sub-folder per job, sweep.json, "
                                                "summary.csv, submitit logs."),
    what: str = typer.Option("cnn", "--what", help="cnn (train-cnn) or finetune (LoRA/QLoRA)."),
    folds: str = typer.Option("all", "--folds", metavar="N,N|all", help="'all' or fold numbers, e.g. 0,1."),
    lr: str = typer.Option("1e-4", "--lr", help="Learning rates, e.g. 1e-4,3e-4."),
    option: list[str] = typer.Option([], "--option", help="key=value passed to every job's config "
                                                          "(e.g. epochs=20, base_model=/models/llama, "
                                                          "method=qlora); repeatable."),
    executor: str = typer.Option("slurm", "--executor", help="slurm, or local (subprocesses on this "
                                                             "machine, through submitit's local executor)."),
    partition: str = typer.Option(None, "--partition", help="Slurm partition."),
    time: int = typer.Option(120, "--time", help="Wall-clock limit per job in minutes."),
    gpus: int = typer.Option(1, "--gpus", help="GPUs per job."),
    cpus: int = typer.Option(4, "--cpus", help="CPU cores per job."),
    mem: float = typer.Option(32, "--mem", help="Memory per job in GB."),
    parallel: int = typer.Option(64, "--parallel", help="Jobs of the array running at once."),
    slurm: list[str] = typer.Option([], "--slurm", help="Extra #SBATCH option key=value (account=lab, "
                                                        "qos=high); repeatable."),
    wait: bool = typer.Option(False, "--wait/--no-wait", help="Wait for the jobs, then collect."),
    collect: bool = typer.Option(False, "--collect", help="Only gather the jobs' metrics of an existing "
                                                          "sweep into OUT/summary.csv."),
) -> None:
    """Submit folds x learning rates as a job array; `--collect` gathers the results into summary.csv."""
    from medvlm.errors import ConfigError
    from medvlm.registry import check_choice
    from medvlm.sweep import (
        SweepConfig,
        collect_sweep,
        parse_folds,
        parse_lrs,
        parse_option,
        submit_sweep,
    )

    if collect:
        frame = collect_sweep(out)
        counts = frame["state"].value_counts().to_dict()
        typer.echo(f"{out / 'summary.csv'}: {len(frame)} jobs ("
                   + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")")
        return
    check_choice("what", what, ["cnn", "finetune"])
    check_choice("executor", executor, ["slurm", "local"])
    for name, value in (("--time", time), ("--cpus", cpus), ("--parallel", parallel)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1; got {value}")
    if gpus < 0 or mem <= 0:
        raise ConfigError(f"--gpus must be >= 0 and --mem > 0; got {gpus} and {mem}")
    config = SweepConfig(what=what, folds=parse_folds(folds), lrs=parse_lrs(lr),
                         options=dict(parse_option(o) for o in option), executor=executor,
                         partition=partition, time_min=time, gpus=gpus, cpus=cpus, mem_gb=mem,
                         array_parallelism=parallel, slurm_extra=dict(parse_option(s) for s in slurm))
    record = submit_sweep(work, out, config, wait=wait)
    ids = ", ".join(j["job_id"] for j in record["jobs"])
    typer.echo(f"{out / 'sweep.json'}: {len(record['jobs'])} {what} jobs submitted ({executor}; ids {ids})")
    if wait:
        typer.echo(f"{out / 'summary.csv'}: written")
    else:
        typer.echo(f"when they finish: medvlm sweep {work} --out {out} --collect")
