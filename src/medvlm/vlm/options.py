"""Options shared by every command that asks a VLM (``eval-vlm``, ``consistency``; the experiment's run
sections inherit them too): which backend and model, how to reach it, how to ask, where to cache.

:class:`BackendOptions` is the common pydantic base of :class:`medvlm.vlm.evaluate.VLMEvalConfig` and
:class:`medvlm.consistency.config.ConsistencyConfig`; its field names and defaults are part of the contract
(YAML keys of ``medvlm run``, keys of ``run.json``). Only pydantic is imported here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from medvlm.vlm._secrets import redact_record, redact_url
from medvlm.vlm.backends import BackendConfig
from medvlm.vlm.usage import Budget


class BackendOptions(BackendConfig):
    """Backend, model and request settings (the API key comes from ``OPENAI_API_KEY``, never from here).

    - reaching the model: the fields of :class:`~medvlm.vlm.backends.BackendConfig` (``backend``
      transformers | openai | litellm | mock, ``model``, ``adapter``, ``base_urls``, ``device``, ``dtype``,
      ``batch_size``, ``concurrency``, ``timeout_s``, ``max_retries``, ``backoff_s``, ``max_backoff_s``);
    - asking it: ``scoring`` (generate | logprobs), ``structured`` (none | choice | json),
      ``modalities`` (one, or four for a 2x2 montage), ``max_new_tokens``, ``seed`` (base sampling seed,
      request seed = seed + repeat index; None = send none);
    - ``extra_body``: extra JSON fields of every request (openai backend; e.g. a server's own sampling
      switch), part of the cache key;
    - ``cache`` (response cache file; None = ``RUN/cache.sqlite``), ``progress`` (rich progress bar);
    - ``limit``: only the first N patients of the cohort, in the cohort's order (lmms-eval's ``--limit``;
      None = all), applied by :func:`first_patients`.
    - ``max_cost`` (USD; a backend that reports cost, ``litellm``): no request is sent once the next one
      might take the run's spend past it (:class:`~medvlm.vlm.usage.Budget`); None = no limit.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: one line, exit 2

    scoring: Literal["generate", "logprobs"] = "generate"
    structured: Literal["none", "choice", "json"] = "none"
    modalities: list[str] | None = None  # default: the task's
    max_new_tokens: int = Field(96, ge=1)
    seed: int | None = 0
    extra_body: dict[str, Any] = Field(default_factory=dict)  # sent as is to an OpenAI-compatible server
    cache: str | None = None  # default RUN/cache.sqlite
    progress: bool = True
    limit: int | None = Field(None, ge=1)
    max_cost: float | None = Field(None, gt=0)

    def budget(self) -> Budget | None:
        """The ``--max-cost`` budget of one run (None without a limit)."""
        return None if self.max_cost is None else Budget(self.max_cost)

    def record(self) -> dict[str, Any]:
        """The options as run.json records them: JSON, with credentials in a ``--base-url`` and the values
        of secret-named ``extra_body`` fields masked (:func:`~medvlm.vlm._secrets.redact_record`)."""
        data = self.model_dump(mode="json")
        for name in ("max_cost", "limit"):  # not given: recorded as before the option existed
            if data.get(name) is None:
                data.pop(name, None)
        return redact_record(data)

    def backend_config(self) -> BackendConfig:
        """The plain :class:`~medvlm.vlm.backends.BackendConfig` part that
        :func:`~medvlm.vlm.backends.make_backend` takes (how to reach the model)."""
        return BackendConfig(**self.model_dump(include=set(BackendConfig.model_fields)))


def first_patients(ids: list[str], limit: int | None) -> list[str]:
    """The first ``limit`` patient ids, in their order (all of them when ``limit`` is None).

    >>> first_patients(["P3", "P1", "P2"], 2), first_patients(["P3", "P1"], None)
    (['P3', 'P1'], ['P3', 'P1'])
    """
    return list(ids) if limit is None else list(ids)[:limit]


#: config field -> command-line option, where the two differ (for one-line validation messages)
OPTION_NAMES = {"base_urls": "base-url", "timeout_s": "timeout"}


def option_name(field: str, extra: dict[str, str] | None = None) -> str:
    """``--option`` for a config field: ``base_urls`` -> ``--base-url``, ``max_new_tokens`` ->
    ``--max-new-tokens``; ``extra`` adds a command's own renames.

    >>> option_name("timeout_s"), option_name("max_new_tokens"), option_name("x_y", {"x_y": "slice"})
    ('--timeout', '--max-new-tokens', '--slice')
    """
    names = {**OPTION_NAMES, **(extra or {})}
    return "--" + names.get(field, field.replace("_", "-"))


__all__ = ["OPTION_NAMES", "BackendOptions", "first_patients", "option_name", "redact_url"]
