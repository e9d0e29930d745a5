"""The ``medvlm`` command line: a thin layer over library functions.

Each command group lives in its own module and registers its commands on :data:`app`; this module
only imports them and turns user errors (:class:`medvlm.errors.MedVLMError`) into one line on stderr
and exit status 2. Heavy libraries are imported inside the commands, so ``medvlm --help`` is instant.
"""

from __future__ import annotations

import importlib
import sys

from medvlm.cli._app import app

# Command groups, in pipeline order. A module missing here means the group has not landed yet.
_COMMAND_MODULES = ["data", "cnn", "vlm", "consistency", "finetune", "results", "study", "scale", "discover"]

for _name in _COMMAND_MODULES:
    try:
        importlib.import_module(f"medvlm.cli.{_name}")
    except ModuleNotFoundError as exc:  # only tolerate the group module itself being absent
        if exc.name != f"medvlm.cli.{_name}":
            raise


def command():
    """The click command behind :data:`app`, every parameter with a plain metavar (:mod:`._help`)."""
    import typer

    from medvlm.cli._help import tidy_help

    return tidy_help(typer.main.get_command(app))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``medvlm`` script."""
    from medvlm._console import progress_on_stderr
    from medvlm.errors import MedVLMError

    try:
        with progress_on_stderr():
            command()(args=argv, prog_name="medvlm")
    except MedVLMError as exc:
        # one line, whatever a library put in the message (a torch or sqlite error can span lines)
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"medvlm: error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exc:
        if exc.code == 130 and _caused_by_interrupt(exc):  # typer turns Ctrl-C into exit 130 first
            _interrupted()
        raise
    except RecursionError:  # a JSON/YAML file nested thousands deep (a hostile input, not a bug of ours)
        print("medvlm: error: an input file is nested too deeply to read (thousands of levels of [ or {)",
              file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        if exc.filename is None:  # not about a path the user can fix: a bug, keep the traceback
            raise
        # a path the user gave or a disk problem (permission, read-only, full, a file in the way)
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        print(f"medvlm: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while handling a KeyboardInterrupt (its cause/context chain)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _interrupted() -> None:
    print("medvlm: interrupted; finished work is kept, rerun the same command to resume", file=sys.stderr)
    sys.exit(130)


def invoke(argv: list[str]) -> int:
    """Run one ``medvlm`` command in this process and return its exit status (0 ok, 1 finished with
    failed requests, 2 user error) instead of exiting.

    >>> invoke(["metrics", "/nonexistent.csv"])
    2
    """
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


__all__ = ["app", "command", "invoke", "main"]
