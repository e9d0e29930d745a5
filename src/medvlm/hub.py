"""Where a ``from_pretrained`` model name points, checked in seconds before anything loads.

``transformers`` treats a name that is not a local folder as a Hugging Face Hub id and, on a machine
without internet, retries for minutes before failing. :func:`check_model_source` settles it first:

- an existing folder: used as is;
- a path-like name (``./x``, ``/x``, ``~/x``, ``x/y/z``) that does not exist: an error at once;
- a Hub id already in the local cache: used (offline too);
- otherwise, with ``HF_HUB_OFFLINE`` set: an error (no such folder, and the Hub is off);
- otherwise one Hub request with a short timeout: no such model, or the Hub cannot be reached, is an
  error naming both the missing folder and the Hub's answer.
"""

from __future__ import annotations

import os
from pathlib import Path

from medvlm.errors import BackendError

#: seconds the one Hub request may take before the Hub counts as unreachable
HUB_TIMEOUT_S = 5.0


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def looks_like_path(name: str) -> bool:
    """Whether ``name`` can only be a path, never a Hub id (``org/name`` or ``name``).

    >>> [looks_like_path(n) for n in ("./m", "/data/m", "~/m", "a/b/c", "meta-llama/Llama-3.2", "gpt2")]
    [True, True, True, True, False, False]
    """
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def check_model_source(name: str, option: str = "--model") -> str:
    """``name`` when it is a folder, a cached Hub id, or a Hub id the Hub confirms; BackendError (one
    line) otherwise. Never waits longer than :data:`HUB_TIMEOUT_S` for the Hub."""
    path = Path(name).expanduser()
    if path.is_dir():
        return name
    if path.exists():
        raise BackendError(f"{option} {name}: a file, not a model folder (from_pretrained needs a folder)")
    if looks_like_path(name):
        raise BackendError(f"{option} {name}: no such folder")
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return name  # in the local Hub cache: loads without the network
    except Exception:  # noqa: BLE001 - an invalid repo id is caught below with a clear message
        pass
    if _offline():
        raise BackendError(f"{option} {name}: no such folder, and not in the Hugging Face cache "
                           "(HF_HUB_OFFLINE is set, so the Hub is not asked)")
    try:
        from huggingface_hub import model_info
        from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - transformers brings huggingface_hub
        return name
    try:
        model_info(name, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return name  # exists; from_pretrained says what access it needs
    except RepositoryNotFoundError:
        raise BackendError(f"{option} {name}: no such folder, and the Hugging Face Hub has no model of that "
                           "name (or it is private: log in with `hf auth login`)") from None
    except HFValidationError:
        raise BackendError(f"{option} {name}: no such folder, and not a valid Hub model id") from None
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        raise BackendError(f"{option} {name}: no such folder, and the Hugging Face Hub cannot be reached "
                           f"({type(exc).__name__}); give a local model folder") from None
    return name
