"""One small registry: name -> factory, with lazy ``"module:attr"`` targets and a "did you mean".

Used for backends, CNN models and slice-to-patient reducers. Register in one place only (the module
that owns the concept creates its ``Registry`` and fills it).

>>> reg = Registry("reducer")
>>> reg.register("majority", "builtins:max")
>>> reg.get("majority")(1, 3)
3
>>> try:
...     reg.get("majorty")
... except ConfigError as exc:
...     print(str(exc)[-24:])
Did you mean 'majority'?
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any

from medvlm.errors import ConfigError


def did_you_mean(name: str, choices: list[str]) -> str:
    """A " Did you mean 'x'?" suffix for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_choice(parameter: str, value: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ``value`` when it is one of ``choices``, else raise a scikit-learn style ConfigError."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(
            f"The {parameter!r} parameter must be one of {choices}. Got {value!r} instead."
            + did_you_mean(value, choices)
        )
    return value


class Registry:
    """Maps names to factories; a factory may be given as a lazy ``"package.module:attr"`` string."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any] | str] = {}

    def register(self, name: str, target: Callable[..., Any] | str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = target

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Callable[..., Any]:
        check_choice(self.kind, name, self.names())
        target = self._entries[name]
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = target
        return target
