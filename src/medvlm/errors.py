"""The small exception tree of medvlm.

A ``MedVLMError`` is a *user* error (bad path, bad file, bad option): the CLI prints its message on one
line and exits with status 2, without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MedVLMError(Exception):
    """Base class for errors caused by the user's input; the CLI turns them into exit status 2."""


class DataError(MedVLMError):
    """A data file or folder is missing, unreadable or inconsistent (names the patient and file)."""


class ConfigError(MedVLMError):
    """An option or configuration value is invalid (names the option and the allowed values)."""


class BackendError(MedVLMError):
    """A model backend cannot be used (missing server, missing model, missing log-probs, ...)."""


class MissingDependencyError(MedVLMError):
    """An optional dependency is missing; the message says which extra to install."""


def require(module: str, extra: str) -> None:
    """Raise :class:`MissingDependencyError` when ``module`` cannot be imported.

    >>> require("json", "core")
    """
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"this step needs the Python package {module!r}: pip install 'medvlm[{extra}]'"
        )
