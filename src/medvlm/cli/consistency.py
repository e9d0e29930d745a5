"""``medvlm consistency``: the same image and prompt N times (a thin wrapper over
:func:`medvlm.consistency.run.run_consistency`).

The backend options are ``eval-vlm``'s (one definition each in :mod:`medvlm.cli.vlm`, defaults from
:class:`medvlm.vlm.options.BackendOptions`), except where consistency needs something else:
``--orientations`` takes one orientation (``--orientation`` stays accepted, hidden) and ``--slice``
replaces ``--slices``; ``--prompt`` and
``--temperature`` repeatable; ``--temperature`` and ``--top-p`` default to the model's own generation
defaults; no ``--reducer``/``--bootstrap``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medvlm.cli._app import app, out_folder, parse_fold
from medvlm.cli.vlm import (
    Adapter,
    Backend,
    BaseUrl,
    BatchSize,
    Cache,
    Concurrency,
    Device,
    ExtraBody,
    Fold,
    Limit,
    MaxCost,
    MaxNewTokens,
    MaxRetries,
    Modalities,
    Model,
    Progress,
    Scoring,
    Seed,
    Shots,
    Structured,
    Timeout,
    _default,
    backend_fields,
    build_config,
    exit_on_failures,
)

#: config field -> command-line option, for validation messages (besides the shared backend options)
_OPTION_NAMES = {"patients": "patient", "slice_index": "slice", "prompts": "prompt",
                 "orientation": "orientations", "temperatures": "temperature"}


def _one_orientation(orientations: str | None, old: str | None) -> str | None:
    """``--orientations`` (or its old spelling ``--orientation``): one orientation name, or None."""
    from medvlm.errors import ConfigError

    if orientations is not None and old is not None:
        raise ConfigError("--orientations and --orientation (its old spelling) are both given; give one")
    value = orientations if orientations is not None else old
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if len(names) != 1:
        raise ConfigError(f"--orientations {value!r}: consistency asks about one image, so one orientation "
                          "(axial, coronal or sagittal)")
    return names[0]


@app.command("consistency")
def consistency_cmd(
    work: Path = typer.Argument(..., help="Prepared work folder (manifest.csv, splits.json)."),
    out: Path = typer.Option(..., "--out", callback=out_folder,
        help="Run folder (rerunning reuses its cache: only new repeats "
                             "are sent)."),
    patient: list[str] = typer.Option([], "--patient", help="Patient id (repeatable). Without it: one slice "
                                      "per patient of --cohort."),
    orientations: str | None = typer.Option(None, "--orientations", help="One orientation: axial | coronal | "
                                            "sagittal (default: the task's first, axial)."),
    orientation: str | None = typer.Option(None, "--orientation", hidden=True,
                                           help="Old spelling of --orientations."),
    slice_index: int | None = typer.Option(None, "--slice", help="Canonical slice index (default: the "
                                           "central tumour slice of each patient)."),
    repeats: int = typer.Option(95, "--repeats", help="Times the same image and prompt are asked."),
    backend: Backend = _default("backend"),
    model: Model = ...,  # type: ignore[assignment]
    base_url: BaseUrl = [],  # noqa: B006 (typer copies it)
    prompt: list[str] = typer.Option([], "--prompt", help="Built-in prompt name or a text file (default "
                                     "the task's; repeat for paraphrase robustness)."),
    scoring: Scoring = _default("scoring"),
    structured: Structured = _default("structured"),
    cohort: str = typer.Option("test", "--cohort", help="test | train | val | all (without --patient)."),
    fold: Fold = "0",
    modalities: Modalities = None,
    concurrency: Concurrency = _default("concurrency"),
    batch_size: BatchSize = _default("batch_size"),
    adapter: Adapter = _default("adapter"),
    device: Device = _default("device"),
    tie_break: str | None = typer.Option(None, "--tie-break", help="A class name (`medvlm tasks`): "
                                         "where a tie of top answers goes (default: the positive class; more "
                                         "than two classes: the lowest-numbered of the tied classes)."),
    max_new_tokens: MaxNewTokens = _default("max_new_tokens"),
    temperature: list[float] = typer.Option([], "--temperature", help="Sampling temperature (repeatable: a "
                                            "sweep). Default: the model's own (generation_config / server)."),
    top_p: float | None = typer.Option(None, "--top-p", help="Default: the model's own."),
    seed: Seed = _default("seed"),
    timeout: Timeout = _default("timeout_s"),
    max_retries: MaxRetries = _default("max_retries"),
    cache: Cache = _default("cache"),
    progress: Progress = _default("progress"),
    extra_body: ExtraBody = None,
    limit: Limit = None,
    shots: Shots = 0,
    max_cost: MaxCost = None,
) -> None:
    """Ask the same image and prompt N times; count, agree, flip (writes consistency.csv, summary.json).

    Exit status 0 when every request was answered, 1 when some failed after retries (rerun the same
    command to retry only those), 2 on a user error.
    """
    from medvlm._console import make_console
    from medvlm.consistency.config import ConsistencyConfig
    from medvlm.consistency.run import run_consistency
    from medvlm.runinfo import add_run_note
    from medvlm.vlm.limit import cohort_limit_note

    shared = backend_fields(backend=backend, model=model, base_url=base_url, adapter=adapter, scoring=scoring,
                            structured=structured, modalities=modalities, concurrency=concurrency,
                            batch_size=batch_size, device=device, max_new_tokens=max_new_tokens, seed=seed,
                            timeout=timeout, max_retries=max_retries, cache=cache, progress=progress,
                            extra_body=extra_body, max_cost=max_cost)
    config = build_config(ConsistencyConfig, {
        **shared, "patients": list(patient), "orientation": _one_orientation(orientations, orientation),
        "slice_index": slice_index, "cohort": cohort,
        "fold": parse_fold(fold, cohort="all" if patient else cohort, command="consistency", shots=shots),
        "prompts": list(prompt), "limit": limit,
        "temperatures": list(temperature), "top_p": top_p, "repeats": repeats, "tie_break": tie_break,
        "shots": shots},
        renames=_OPTION_NAMES)
    note = cohort_limit_note(work, config)
    if note:
        typer.echo(f"medvlm: note: {note}", err=True)
    result = run_consistency(work, out, config, console=make_console())
    if note:
        add_run_note(out, note)
    exit_on_failures(result.n_failed, out, result.usage)
