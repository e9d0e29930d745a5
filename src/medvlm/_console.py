"""What the command line prints, decided in one place: consoles that survive a log file or a Slurm job,
and third-party noise kept out of them.

- :func:`make_console`: a rich Console on stdout (or stderr). On a terminal, rich's usual one. Anywhere
  else (a pipe, a file, a Slurm log) plain and wide: no colour or escape codes, tables at their natural
  width (:data:`LOG_WIDTH` columns at most, never cut to 80 columns with "…" cells), rules short.
- :func:`progress_on_stderr`: progress bars on stderr, and none in a log.
- :func:`quiet_noise`: known third-party noise off (``--verbose`` keeps it): transformers' weight-loading
  progress bars and its "Some weights ... were not initialized" style log warnings, FutureWarning and
  DeprecationWarning from the libraries medvlm calls, bitsandbytes' kernel and CUDA hints. medvlm's own
  warnings are never filtered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

#: the width of a console that is not a terminal: wide enough for any table medvlm prints
LOG_WIDTH = 4000
#: the width of a rule (a stage header) in a log
RULE_WIDTH = 80
#: libraries whose FutureWarning/DeprecationWarning are noise to a medvlm user (module name prefixes)
NOISY_LIBRARIES = ("transformers", "torch", "torchvision", "peft", "trl", "accelerate", "bitsandbytes",
                   "huggingface_hub", "monai", "torchio", "timm", "unsloth", "litellm", "pydantic")
#: loggers turned down to errors (the first two are transformers' and bitsandbytes' own)
NOISY_LOGGERS = ("transformers", "bitsandbytes", "accelerate", "peft", "huggingface_hub", "torchio", "httpx")
#: environment variables read by those libraries when they are imported (set only when not set already)
QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "BITSANDBYTES_NOWELCOME": "1"}
#: UserWarning messages (regular expressions) of those libraries that a user cannot act on
NOISY_MESSAGES = (r".*bitsandbytes.*", r".*TypedStorage is deprecated.*", r".*torch\.utils\._pytree.*",
                  r".*`resume_download` is deprecated.*", r".*copying from a non-meta parameter.*")


def is_terminal(stderr: bool = False) -> bool:
    """Whether stdout (``stderr``: stderr) is an interactive terminal."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def make_console(*, stderr: bool = False) -> Any:
    """The rich Console every command prints through (see the module docstring).

    >>> make_console().width == LOG_WIDTH   # doctests do not run on a terminal
    True
    """
    from rich.console import Console

    if is_terminal(stderr):
        return Console(stderr=stderr)

    class LogConsole(Console):
        """Plain and wide; a rule is one short line, not thousands of dashes."""

        def rule(self, title: Any = "", *args: Any, **kwargs: Any) -> None:
            from rich.text import Text

            text = Text.from_markup(title) if isinstance(title, str) else title
            plain = f"── {text.plain} " if text.plain else ""
            self.print(plain + "─" * max(3, RULE_WIDTH - len(plain)), highlight=False, markup=False)

    return LogConsole(stderr=stderr, width=LOG_WIDTH, no_color=True, color_system=None, highlight=False,
                      emoji=False, force_terminal=False, force_interactive=False, soft_wrap=False)


@contextlib.contextmanager
def progress_on_stderr() -> Iterator[None]:
    """While a command runs, rich's global console (what a progress bar without a console of its own
    draws on) is stderr: stdout keeps the results alone. Where stderr is not a terminal (a log) progress
    bars are not drawn at all, so a log holds each command's one summary line, not a bar's last frame
    too. The previous global console is restored afterwards."""
    import rich

    console = rich.get_console()
    saved = dict(console.__dict__)
    rich.reconfigure(stderr=True, quiet=not is_terminal(stderr=True))
    try:
        yield
    finally:
        console.__dict__.clear()
        console.__dict__.update(saved)


def quiet_noise(verbose: bool = False) -> None:
    """Filter the known third-party noise (see the module docstring); ``verbose``: leave it all on."""
    if verbose:
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for library in NOISY_LIBRARIES:
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=rf"{library}(\.|$)")
    for message in NOISY_MESSAGES:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    warnings.filterwarnings("ignore", module=r"bitsandbytes(\.|$)")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # imported already: its verbosity was read at import
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except Exception:  # noqa: BLE001, S110 - only quieter output is at stake
            pass


__all__ = ["LOG_WIDTH", "is_terminal", "make_console", "progress_on_stderr", "quiet_noise"]
