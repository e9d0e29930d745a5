"""What the CNN training prints on stderr: progress bars over batches and one line per event."""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console


class _Reporter:
    """A rich progress bar over batches plus one line per epoch (on stderr)."""

    def __init__(self, enabled: bool, *, silent: bool = False) -> None:
        from medvlm._console import make_console

        self.console: Console = make_console(stderr=True)  # plain and wide in a log file
        self.enabled = enabled and not silent
        self.silent = silent

    @contextlib.contextmanager
    def bar(self, description: str, total: int) -> Any:
        if not self.enabled or not self.console.is_terminal:  # no bar (nor its blank line) in a log file
            yield lambda: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)

    def line(self, text: str) -> None:
        if not self.silent:
            self.console.print(text, highlight=False)


def _fmt(value: Any) -> str:
    """A metric with three decimals; ``  n/a`` for None or NaN.

    >>> _fmt(0.81234), _fmt(None), _fmt(float("nan"))
    ('0.812', '  n/a', '  n/a')
    """
    return "  n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
