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


def failure_reason(exc: BaseException, limit: int = 200) -> str:
    """One short line saying why loading a file failed: ``Type: message``, with torch's advice about
    ``weights_only`` and other boilerplate left out.

    >>> failure_reason(ValueError("bad header\\n  more detail"))
    'ValueError: bad header more detail'
    """
    import re

    text = " ".join(str(exc).split())
    for marker in (" Check the documentation", " This is an internal", " Please use `torch.serialization"):
        text = text.split(marker)[0]
    found = re.search(r"WeightsUnpickler error: (.+)", text)
    if found and "Unsupported global" in found.group(1):
        return f"it holds objects other than tensors: {found.group(1)[:limit]}"
    if found:
        return f"not a torch file: {found.group(1)[:limit]}"
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__


def first_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (the type alone for an empty message), at most ``limit``
    characters: how a failure inside a library (transformers, safetensors, PEFT) is named in one line.

    >>> first_line(ValueError("bad header\\n  more detail")), first_line(KeyError())
    ('ValueError: bad header', 'KeyError')
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    name = type(exc).__name__
    return (f"{name}: {lines[0]}" if lines else name)[:limit]
