"""``medvlm consistency``: the same image and prompt N times (a thin wrapper over
:func:`medvlm.consistency.run_consistency`).

The backend options mirror ``eval-vlm`` (:mod:`medvlm.cli.vlm`) name for name and default for default,
except where consistency needs something else: ``--orientation`` (one) and ``--slice`` instead of
``--orientations``/``--slices``; ``--prompt`` and ``--temperature`` repeatable; ``--temperature`` and
``--top-p`` default to the model's own generation defaults; no ``--reducer``/``--bootstrap``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medvlm.cli._app import app

#: config field -> command-line option, for validation messages
_OPTION_NAMES = {"patients": "patient", "slice_index": "slice", "prompts": "prompt",
                 "temperatures": "temperature", "base_urls": "base-url", "timeout_s": "timeout"}


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command("consistency")
def consistency_cmd(
    work: Path = typer.Argument(..., help="Prepared work folder (manifest.csv, splits.json)."),
    out: Path = typer.Option(..., "--out", help="Run folder (rerunning reuses its cache: only new repeats "
                             "are sent)."),
    patient: list[str] = typer.Option([], "--patient", help="Patient id (repeatable). Without it: one slice "
                                      "per patient of --cohort."),
    orientation: str = typer.Option("axial", "--orientation", help="axial | coronal | sagittal."),
    slice_index: int | None = typer.Option(None, "--slice", help="Canonical slice index (default: the "
                                           "central tumour slice of each patient)."),
    repeats: int = typer.Option(95, "--repeats", help="Times the same image and prompt are asked."),
    backend: str = typer.Option("transformers", "--backend", help="transformers | openai | mock."),
    model: str = typer.Option(..., "--model", help="Model folder / hub name, or the served model name."),
    base_url: list[str] = typer.Option([], "--base-url", help="OpenAI-compatible server (repeatable: "
                                       "requests are spread over all of them)."),
    prompt: list[str] = typer.Option([], "--prompt", help="Built-in prompt name or a text file (default "
                                     "seed; repeat for paraphrase robustness)."),
    scoring: str = typer.Option("generate", "--scoring", help="generate | logprobs."),
    structured: str = typer.Option("none", "--structured", help="none | choice | json."),
    cohort: str = typer.Option("test", "--cohort", help="test | train | val | all (without --patient)."),
    fold: int = typer.Option(0, "--fold"),
    modalities: str = typer.Option("flair", "--modalities", help="e.g. flair,t1ce,t2,t1 (2x2 montage)."),
    concurrency: int = typer.Option(4, "--concurrency", help="Requests in flight (openai)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Batch size (transformers)."),
    adapter: str | None = typer.Option(None, "--adapter", help="PEFT adapter folder (transformers)."),
    device: str = typer.Option("auto", "--device"),
    tie_break: str = typer.Option("hgg", "--tie-break", help="hgg | lgg: how a tie of top answers breaks."),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens"),
    temperature: list[float] = typer.Option([], "--temperature", help="Sampling temperature (repeatable: a "
                                            "sweep). Default: the model's own (generation_config / server)."),
    top_p: float | None = typer.Option(None, "--top-p", help="Default: the model's own."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (request seed = seed + repeat)."),
    timeout: float = typer.Option(120.0, "--timeout", help="Per-request timeout in seconds (openai)."),
    max_retries: int = typer.Option(5, "--max-retries"),
    cache: Path | None = typer.Option(None, "--cache", help="Response cache (default RUN/cache.sqlite)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Ask the same image and prompt N times; count, agree, flip (writes consistency.csv, summary.json).

    Exit status 0 when every request was answered, 1 when some failed after retries (rerun the same
    command to retry only those), 2 on a user error.
    """
    from pydantic import ValidationError
    from rich.console import Console

    from medvlm.consistency import ConsistencyConfig, run_consistency
    from medvlm.errors import ConfigError

    try:
        config = ConsistencyConfig(
            backend=backend, model=model, base_urls=list(base_url), adapter=adapter, patients=list(patient),
            orientation=orientation, slice_index=slice_index, cohort=cohort, fold=fold,
            prompts=list(prompt) or ["seed"], temperatures=list(temperature), top_p=top_p, seed=seed,
            repeats=repeats, scoring=scoring, structured=structured, modalities=_csv(modalities),
            max_new_tokens=max_new_tokens, tie_break=tie_break, concurrency=concurrency,
            batch_size=batch_size,
            device=device, timeout_s=timeout, max_retries=max_retries, cache=str(cache) if cache else None,
            progress=progress)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0])
        raise ConfigError(f"--{_OPTION_NAMES.get(name, name.replace('_', '-'))}: {err['msg']}") from None
    result = run_consistency(work, out, config, console=Console())
    if result.n_failed:
        typer.echo(f"medvlm: {result.n_failed} request(s) failed after retries (see {out / 'failures.csv'}); "
                   "rerun the same command to retry only those", err=True)
        raise typer.Exit(1)
