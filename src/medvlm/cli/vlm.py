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


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command("eval-vlm")
def eval_vlm_cmd(
    work: Path = typer.Argument(..., help="Prepared work folder (manifest.csv, splits.json)."),
    out: Path = typer.Option(..., "--out", help="Run folder (rerunning resumes from its cache)."),
    backend: str = typer.Option("transformers", "--backend", help="transformers | openai | mock."),
    model: str = typer.Option(..., "--model", help="Model folder / hub name, or the served model name."),
    base_url: list[str] = typer.Option([], "--base-url", help="OpenAI-compatible server (repeatable: "
                                       "requests are spread over all of them)."),
    orientations: str = typer.Option("axial,coronal,sagittal", "--orientations"),
    prompt: str = typer.Option("seed", "--prompt", help="Built-in prompt name or a text file."),
    scoring: str = typer.Option("generate", "--scoring", help="generate | logprobs."),
    structured: str = typer.Option("none", "--structured", help="none | choice | json."),
    cohort: str = typer.Option("test", "--cohort", help="test | train | val | all."),
    fold: int = typer.Option(0, "--fold"),
    slices: str = typer.Option("tumour", "--slices", help="tumour | all | central:K."),
    modalities: str = typer.Option("flair", "--modalities", help="e.g. flair,t1ce,t2,t1 (2x2 montage)."),
    concurrency: int = typer.Option(4, "--concurrency", help="Requests in flight (openai)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Batch size (transformers)."),
    repeats: int = typer.Option(1, "--repeats", help="Times each slice is asked."),
    adapter: str | None = typer.Option(None, "--adapter", help="PEFT adapter folder (transformers)."),
    device: str = typer.Option("auto", "--device"),
    reducer: str | None = typer.Option(None, "--reducer", help="majority | mean_prob (default by scoring)."),
    tie_break: str = typer.Option("hgg", "--tie-break", help="hgg | lgg: how an LGG/HGG vote tie breaks."),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature"),
    top_p: float = typer.Option(1.0, "--top-p"),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (request seed = seed + repeat)."),
    timeout: float = typer.Option(120.0, "--timeout", help="Per-request timeout in seconds (openai)."),
    max_retries: int = typer.Option(5, "--max-retries"),
    cache: Path | None = typer.Option(None, "--cache", help="Response cache (default RUN/cache.sqlite)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the CIs (0: none)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Ask a VLM about every tumour slice of a cohort, vote per patient, score.

    Exit status 0 when every request was answered, 1 when some failed after retries (the outputs are
    written from the answers received; rerun the same command to retry only the failures), 2 on a user
    error.
    """
    from pydantic import ValidationError
    from rich.console import Console

    from medvlm.errors import ConfigError
    from medvlm.vlm.engine import VLMEvalConfig, evaluate_vlm

    try:
        config = VLMEvalConfig(
            backend=backend, model=model, base_urls=list(base_url), adapter=adapter,
            orientations=_csv(orientations), prompt=prompt, scoring=scoring, structured=structured,
            cohort=cohort, fold=fold, slices=slices, modalities=_csv(modalities), repeats=repeats,
            reducer=reducer, tie_break=tie_break, max_new_tokens=max_new_tokens, temperature=temperature,
            top_p=top_p, seed=seed, concurrency=concurrency, batch_size=batch_size, device=device,
            timeout_s=timeout, max_retries=max_retries, cache=str(cache) if cache else None,
            n_boot=bootstrap, progress=progress)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    console = Console(stderr=False)
    result = evaluate_vlm(work, out, config, console=console)
    if result.n_failed:
        typer.echo(f"medvlm: {result.n_failed} request(s) failed after retries (see {out / 'failures.csv'}); "
                   "rerun the same command to retry only those", err=True)
        raise typer.Exit(1)
