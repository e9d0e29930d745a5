"""``medvlm eval-vlm`` and ``medvlm make-tiny-vlm``: thin wrappers over :mod:`medvlm.vlm`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from medvlm.cli._app import FOLD_HELP, app, out_folder, parse_fold
from medvlm.vlm.tiny_train import TRAIN_STEPS

T = TypeVar("T")


@app.command("make-tiny-vlm")
def make_tiny_vlm_cmd(
    out: Path = typer.Argument(..., callback=out_folder,
        help="Folder to write the model, tokenizer and processor to."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights and of the training (same seed, "
                             "same model)."),
    train_steps: int = typer.Option(TRAIN_STEPS, "--train-steps", help="Training steps to answer in the "
                                    "study's format, mostly one code, no grade information (0: the "
                                    "untrained random model)."),
) -> None:
    """Write a tiny Llama-3.2-Vision model (+ tokenizer, processor), built offline: a stand-in for a real
    VLM, trained briefly to answer in the study's format (its answers carry no grade information)."""
    from medvlm.vlm.tiny import make_tiny_vlm

    path = make_tiny_vlm(out, seed=seed, train_steps=train_steps)
    typer.echo(f"tiny VLM written to {path} (load with from_pretrained)")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


# ------------------------------------------------------------------------ options shared with consistency
# The backend options of eval-vlm and consistency: one definition each (name and help here, default from
# medvlm.vlm.options.BackendOptions through _default), turned into config fields by backend_fields().
Backend = Annotated[str, typer.Option("--backend", help="transformers | openai | litellm | mock.")]
Model = Annotated[str, typer.Option("--model", help="Model folder / hub name, the served model name, or "
                                    "PROVIDER/NAME (litellm, e.g. anthropic/claude-sonnet-4-5).")]
BaseUrl = Annotated[list[str], typer.Option("--base-url", help="OpenAI-compatible server (repeatable: "
                                            "requests are spread over all of them).")]
Scoring = Annotated[str, typer.Option("--scoring", help="generate | logprobs.")]
Structured = Annotated[str, typer.Option("--structured", help="none | choice | json.")]
Fold = Annotated[str, typer.Option("--fold", help=FOLD_HELP)]
Modalities = Annotated[str | None, typer.Option("--modalities", help="Comma list of the task's modalities "
                                                 "(several: a 2x2 montage); default: the task's.")]
Concurrency = Annotated[int, typer.Option("--concurrency", help="Requests in flight (openai).")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Batch size (transformers).")]
Adapter = Annotated[str | None, typer.Option("--adapter", help="PEFT adapter folder (transformers).")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps (transformers).")]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", help="Longest answer, in tokens.")]
Seed = Annotated[int, typer.Option("--seed", help="Sampling seed (request seed = seed + repeat).")]
Timeout = Annotated[float, typer.Option("--timeout", help="Per-request timeout in seconds (openai).")]
MaxRetries = Annotated[int, typer.Option("--max-retries", help="Retries of a failed request (connection "
                                         "errors, 408, 429, 5xx; openai).")]
Cache = Annotated[Path | None, typer.Option("--cache", help="Response cache (default RUN/cache.sqlite).")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="A progress bar on stderr "
                                          "(never in a log file).")]
Limit = Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N patients of the cohort, "
                                           "in its order in splits.json (as lmms-eval's --limit); recorded "
                                           "in run.json.")]
Shots = Annotated[int, typer.Option("--shots", help="Few-shot: K labelled examples (class-balanced, from the "
                                    "training cohort of --fold, same orientation; a 2D image task: training "
                                    "images) before each question.")]
MaxCost = Annotated[float | None, typer.Option("--max-cost", help="USD (litellm): send no request once the "
                                                "next might take this run's spend past it; rerun with a "
                                                "higher limit to resume.")]
ExtraBody = Annotated[str | None, typer.Option("--extra-body", help="A JSON object of extra request fields "
                                               "(openai backend), e.g. '{\"top_k\": 40}'.")]


def _extra_body(text: str | None) -> dict[str, Any]:
    """``--extra-body`` -> a dict (ConfigError unless a JSON object)."""
    import json

    from medvlm.errors import ConfigError

    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--extra-body: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--extra-body: a JSON object is needed, got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise ConfigError("--extra-body: NaN and Infinity are not valid in a request") from None
    own = sorted(set(value) & _OWN_FIELDS)
    if own:
        raise ConfigError(f"--extra-body: {own} are set by medvlm's own options (--model, --temperature, "
                          "--top-p, --seed, --max-new-tokens, --scoring, --structured); use those")
    return value


#: request fields medvlm sets itself (an --extra-body key must not override them silently)
_OWN_FIELDS = {"model", "messages", "max_tokens", "temperature", "top_p", "seed", "logprobs", "top_logprobs",
               "response_format", "guided_choice", "structured_outputs"}


def _default(field: str):
    """The default of a :class:`~medvlm.vlm.options.BackendOptions` field (the CLI's default too)."""
    from medvlm.vlm.options import BackendOptions

    return BackendOptions.model_fields[field].get_default(call_default_factory=True)


def backend_fields(*, backend: str, model: str, base_url: list[str], adapter: str | None, scoring: str,
                   structured: str, modalities: str | None, concurrency: int, batch_size: int, device: str,
                   max_new_tokens: int, seed: int | None, timeout: float, max_retries: int,
                   cache: Path | None, progress: bool, extra_body: str | None = None,
                   max_cost: float | None = None) -> dict[str, Any]:
    """The shared command-line options -> :class:`~medvlm.vlm.options.BackendOptions` fields."""
    return {"backend": backend, "model": model, "base_urls": list(base_url), "adapter": adapter,
            "scoring": scoring, "structured": structured,
            "modalities": _csv(modalities) if modalities else None,
            "concurrency": concurrency, "batch_size": batch_size, "device": device,
            "max_new_tokens": max_new_tokens, "seed": seed, "timeout_s": timeout, "max_retries": max_retries,
            "cache": str(cache) if cache else None, "progress": progress,
            "extra_body": _extra_body(extra_body), "max_cost": max_cost}


def build_config(cls: type[T], fields: dict[str, Any], *, renames: dict[str, str] | None = None) -> T:
    """``cls(**fields)``; a validation error becomes one :class:`ConfigError` line naming the option
    (``renames``: the command's own field -> option names, besides the shared ones)."""
    from pydantic import ValidationError

    from medvlm.errors import ConfigError
    from medvlm.vlm.options import option_name

    try:
        return cls(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{option_name(str(err['loc'][0]), renames)}: {message}") from None


def exit_on_failures(n_failed: int, out: Path, usage: dict[str, Any] | None = None) -> None:
    """Exit status 1 (with one line on stderr) when some requests failed after retries, or were not
    asked because ``--max-cost`` was reached (``usage``: run.json's)."""
    from medvlm.vlm.usage import max_cost_message

    stopped = max_cost_message(usage)
    if stopped:
        typer.echo(f"medvlm: {stopped}", err=True)
        raise typer.Exit(1)
    if n_failed:
        typer.echo(f"medvlm: {n_failed} request(s) failed after retries (see {out / 'failures.csv'}); "
                   "rerun the same command to retry only those", err=True)
        raise typer.Exit(1)


@app.command("eval-vlm")
def eval_vlm_cmd(
    work: Path = typer.Argument(..., help="Prepared work folder (manifest.csv, splits.json)."),
    out: Path = typer.Option(..., "--out", callback=out_folder,
        help="Run folder (rerunning resumes from its cache)."),
    backend: Backend = _default("backend"),
    model: Model = ...,  # type: ignore[assignment]
    base_url: BaseUrl = [],  # noqa: B006 (typer copies it)
    orientations: str | None = typer.Option(None, "--orientations",
                                            help="e.g. axial,coronal,sagittal (default: the task's)."),
    prompt: str | None = typer.Option(None, "--prompt", help="Built-in prompt name or a text file "
                                      "(default: the task's, 'seed' for brats-grading)."),
    scoring: Scoring = _default("scoring"),
    structured: Structured = _default("structured"),
    cohort: str = typer.Option("test", "--cohort", help="test | train | val | all."),
    fold: Fold = "0",
    slices: str | None = typer.Option(None, "--slices", help="tumour | all | central:K (default: the task's, "
                                      "tumour for brats-grading)."),
    modalities: Modalities = None,
    concurrency: Concurrency = _default("concurrency"),
    batch_size: BatchSize = _default("batch_size"),
    repeats: int = typer.Option(1, "--repeats", help="Times each slice is asked."),
    adapter: Adapter = _default("adapter"),
    device: Device = _default("device"),
    reducer: str | None = typer.Option(None, "--reducer", help="majority | mean_prob (default by scoring)."),
    tie_break: str | None = typer.Option(None, "--tie-break", help="A class name (`medvlm tasks`): where a "
                                         "vote tie goes (default: the positive class; more than two "
                                         "classes: the lowest-numbered of the tied classes)."),
    max_new_tokens: MaxNewTokens = _default("max_new_tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="Sampling temperature (0: greedy)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling: keep the top-p probability mass."),
    seed: Seed = _default("seed"),
    timeout: Timeout = _default("timeout_s"),
    max_retries: MaxRetries = _default("max_retries"),
    cache: Cache = _default("cache"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the CIs (0: none)."),
    progress: Progress = _default("progress"),
    extra_body: ExtraBody = None,
    limit: Limit = None,
    image: str = typer.Option("real", "--image", help="What the model is shown: real | none (the prompt "
                              "alone) | blank | noise | tumour-masked (controls)."),
    artifact: str | None = typer.Option(None, "--artifact", help="KIND:SEVERITY, an MRI artifact applied to "
                                        "each volume before slicing: motion, ghosting, spike or bias-field, "
                                        "severity 0..1 (needs medvlm[controls])."),
    shots: Shots = 0,
    max_cost: MaxCost = None,
    save_images: int = typer.Option(0, "--save-images", help="Write N of the images asked about, byte for "
                                    "byte as sent, to RUN/images/ (<patient>_<orientation>_<slice>.png, "
                                    "listed with their sha256 in index.csv)."),
) -> None:
    """Ask a VLM about every tumour slice of a cohort, vote per patient, score.

    Exit status 0 when every request was answered, 1 when some failed after retries (the outputs are
    written from the answers received; rerun the same command to retry only the failures), 2 on a user
    error.
    """
    from medvlm._console import make_console
    from medvlm.runinfo import add_run_note
    from medvlm.vlm.evaluate import VLMEvalConfig, evaluate_vlm
    from medvlm.vlm.limit import cohort_limit_note

    shared = backend_fields(backend=backend, model=model, base_url=base_url, adapter=adapter, scoring=scoring,
                            structured=structured, modalities=modalities, concurrency=concurrency,
                            batch_size=batch_size, device=device, max_new_tokens=max_new_tokens, seed=seed,
                            timeout=timeout, max_retries=max_retries, cache=cache, progress=progress,
                            extra_body=extra_body, max_cost=max_cost)
    config = build_config(VLMEvalConfig, {
        **shared, "orientations": _csv(orientations) if orientations else None, "prompt": prompt,
        "cohort": cohort, "fold": parse_fold(fold, cohort=cohort, command="eval-vlm", shots=shots),
        "slices": slices, "repeats": repeats, "reducer": reducer, "tie_break": tie_break,
        "temperature": temperature, "top_p": top_p, "n_boot": bootstrap, "image": image,
        "artifact": artifact, "shots": shots, "limit": limit, "save_images": save_images},
        renames={"n_boot": "bootstrap"})
    note = cohort_limit_note(work, config)
    if note:
        typer.echo(f"medvlm: note: {note}", err=True)
    result = evaluate_vlm(work, out, config, console=make_console())
    if note:
        add_run_note(out, note)
    exit_on_failures(result.n_failed, out, result.usage)
