"""Asking a VLM about images: requests -> (cache | backend) -> answers, parsed through the task.

:func:`ask_images` asks a backend about images, ``repeats`` times each, through the response cache.
Cached answers are reused, every new answer (or failure) is committed as it arrives, and every answer,
cached or new, is parsed through the task (:func:`medvlm.vlm.records.interpret`). ``eval-vlm``
(:mod:`medvlm.vlm.evaluate`) and ``consistency`` (:mod:`medvlm.consistency.run`) both ask through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medvlm.errors import BackendError, ConfigError
from medvlm.vlm.backends import Backend
from medvlm.vlm.cache import ResponseCache
from medvlm.vlm.prompts import Prompt
from medvlm.vlm.records import interpret
from medvlm.vlm.types import Decoding, Shot, VLMRequest, VLMResponse, cache_key
from medvlm.vlm.usage import Budget, Usage

if TYPE_CHECKING:
    from medvlm.tasks.base import Task



# ------------------------------------------------------------------------------------------- ask_images
@dataclass
class Answer:
    """One answered (or failed) call: ``meta`` as given, ``repeat`` index and the response."""

    meta: Any
    repeat: int
    response: VLMResponse


@dataclass
class AskResult:
    """Answers of :func:`ask_images` (in completion order) and counts: ``n_cached`` answers reused,
    ``n_sent`` requests given to the backend, ``n_failed`` of those that failed after retries (and those a
    ``budget`` kept back, ``n_not_asked``); ``usage``: what the requests sent used."""

    answers: list[Answer] = field(default_factory=list)
    n_cached: int = 0
    n_sent: int = 0
    n_failed: int = 0
    n_not_asked: int = 0
    usage: Usage = field(default_factory=Usage)

    @property
    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.response.failed]


def _progress(enabled: bool, total: int | None, description: str):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):  # type: ignore[override]
            speed = task.finished_speed or task.speed
            return Text("-/s" if speed is None else f"{speed:.2f}/s")

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        TextColumn("{task.fields[info]}"), disable=not enabled, transient=False)
    task = progress.add_task(description, total=total, info="")
    return progress, task


def ask_images(backend: Backend, images: Iterable[tuple[Any, bytes]], *, prompt: Prompt | str,
               decoding: Decoding, task: Task | str | None = None, repeats: int = 1,
               cache: ResponseCache | None = None,
               total: int | None = None, progress: bool = False, description: str = "asking",
               on_answer: Callable[[Answer], None] | None = None,
               shots: Callable[[Any], tuple[Shot, ...]] | None = None,
               budget: Budget | None = None) -> AskResult:
    """Ask ``backend`` about each ``(meta, png_bytes)`` of ``images`` ``repeats`` times.

    Each request names the ``task``'s answer codes and prefix (default: the study's task); every answer,
    cached or new, is parsed through the task (:func:`~medvlm.vlm.records.interpret`).
    Each request's cache key covers backend, model, adapter, prompt text, image bytes, ``decoding``
    (sampling settings included) and the repeat index. Cached answers are not sent again; failures are
    recorded in the cache as failures (retried next time) and returned with ``response.error`` set.
    ``images`` is consumed lazily (slices are rendered as the backend asks for work); ``total`` (calls)
    sizes the progress bar. Raises :class:`~medvlm.errors.BackendError` when the backend cannot go on;
    answers received so far stay in the cache. ``shots``: meta -> the few-shot examples shown before
    that image's question (:mod:`medvlm.vlm.fewshot`; the same for every repeat), in the request and its
    cache key; None = zero-shot. ``budget`` (``--max-cost``; a backend that reports cost): a request it
    keeps back is not sent, not cached, and returned as a failure whose error starts with ``max-cost``
    (a rerun asks it).
    """
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1; got {repeats}")
    from medvlm.tasks import get_task

    task = get_task(task)
    codes, prefix = task.codes, task.answer_prefix
    legacy_prefill = prefix if backend.prefills_answer else ""
    backend.check(decoding)
    if budget is not None and not backend.reports_usage:
        raise ConfigError(f"--max-cost: the {backend.name} backend reports no cost; use --backend litellm")
    if budget is not None and getattr(backend, "price_known", None) is False:
        raise ConfigError(f"--max-cost: LiteLLM's cost map has no price for model {backend.config.model!r}, "
                          "so the spend cannot be tracked; run without --max-cost")
    prompt_text = prompt.text if isinstance(prompt, Prompt) else str(prompt)
    model_id, adapter_id = backend.model_identity(), backend.adapter_identity()
    result = AskResult()
    bar, bar_task = _progress(progress, total, description)

    def record(answer: Answer) -> None:
        result.answers.append(answer)
        bar.update(bar_task, advance=1, info=f"sent {result.n_sent}, cached {result.n_cached}, "
                                          f"failed {result.n_failed}")
        if on_answer is not None:
            on_answer(answer)

    def requests() -> Iterable[VLMRequest]:
        for meta, png in images:
            examples = shots(meta) if shots is not None else ()
            for repeat in range(repeats):
                key = cache_key(backend=backend.name, model=model_id, adapter=adapter_id, prompt=prompt_text,
                                image=png, decoding=decoding, repeat=repeat, prefix=prefix, codes=codes,
                                shots=examples)
                hit = cache.get(key) if cache is not None else None
                if hit is not None:
                    result.n_cached += 1
                    record(Answer(meta, repeat, interpret(hit, task, prefill=legacy_prefill)))
                    continue
                if budget is not None and not budget.allows(in_flight := result.n_sent - n_back[0]):
                    budget.n_not_asked += 1
                    result.n_not_asked += 1
                    result.n_failed += 1
                    record(Answer(meta, repeat, VLMResponse(error=budget.reason(in_flight))))
                    continue
                result.n_sent += 1
                yield VLMRequest(key=key, image=png, prompt=prompt_text, repeat=repeat, meta=(meta,),
                                 codes=codes, prefix=prefix, shots=examples)

    n_back = [0]  # responses returned by the backend (requests in flight: n_sent - n_back)
    with bar:
        for request, response in backend.answer(requests(), decoding):
            n_back[0] += 1
            if cache is not None:
                cache.put(request.key, response)
            cost = result.usage.add(response)
            if budget is not None:
                if cost is None:  # priced in the map, yet this answer came without a cost
                    raise BackendError(f"--max-cost: no cost for an answer of model {backend.config.model!r} "
                                       "(LiteLLM's cost map), so the spend cannot be tracked; run without "
                                       "--max-cost")
                budget.spend(cost)
            if response.failed:
                result.n_failed += 1
            record(Answer(request.meta[0], request.repeat, interpret(response, task)))
    return result
