"""Plain metavars in every ``--help``: ``WORK``, ``--fold N|all``, ``--base-url URL``, ``--lr FLOAT``.

Typer shows a required argument as ``{work}`` and an option's value by its Python type (``<list[str]>``,
``<int,int,int>...``). :func:`tidy_help` walks the built click command once, before it runs, and gives
every parameter without a metavar of its own an upper-case one: the option's entry in
:data:`OPTION_METAVARS`, else the click name of its type (TEXT, INTEGER, FLOAT, PATH); an argument its
name (``RUNS...`` when it takes several).
"""

from __future__ import annotations

from typing import Any

#: option -> metavar, where a word says more than the type
OPTION_METAVARS = {
    "--fold": "N|all", "--base-url": "URL", "--orientations": "LIST",
    "--orientation": "NAME", "--modalities": "LIST", "--limit": "N", "--shape": "D H W",
    "--prompt": "NAME|FILE", "--model": "NAME", "--base-model": "NAME|FOLDER", "--adapter": "FOLDER",
    "--cache": "FILE", "--extra-body": "JSON", "--option": "KEY=VALUE", "--slurm": "KEY=VALUE",
    "--artifact": "KIND:SEVERITY", "--task": "NAME", "--device": "NAME", "--patient": "ID",
    "--threshold": "RULE|NUMBER", "--workers": "N|auto", "--lr": "FLOAT",
}
#: Python type name -> metavar
TYPE_METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "Path": "PATH", "bool": "BOOLEAN"}


def _type_metavar(annotation: Any) -> str:
    """``int`` -> INTEGER, ``list[str]`` -> TEXT (the option repeats), ``tuple[int, int]`` -> INTEGER
    INTEGER, ``X | None`` -> X's."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is tuple:
        return " ".join(_type_metavar(a) for a in args)
    if origin in (list, typing.Union, types.UnionType) and args:
        return _type_metavar(args[0])
    name = getattr(annotation, "__name__", str(annotation))
    return TYPE_METAVARS.get(name, name.upper())


def _plain_usage(param: Any) -> None:
    """An argument shows in the usage line as ``WORK`` / ``[OUT]`` / ``RUNS...``, not ``{work}``."""
    name = param.metavar + ("..." if param.nargs != 1 else "")
    usage = name if param.required else f"[{name}]"
    param._usage_display_name = lambda: usage  # noqa: SLF001 - typer's own hook for this piece
    param.display_type_rich = lambda ctx=None: None  # "WORK  help", not "WORK <path>  help"


def tidy_help(command: Any) -> Any:
    """Give every parameter of ``command`` and its subcommands a plain metavar (see the module
    docstring); returns ``command``."""
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)
    for param in getattr(command, "params", []):
        if getattr(param, "param_type_name", "") == "argument":
            param.metavar = param.metavar or str(param.name).upper()
            _plain_usage(param)
            continue
        if param.metavar is not None or getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        long = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        param.metavar = OPTION_METAVARS.get(long) or _param_metavar(param)
    return command


def _param_metavar(param: Any) -> str:
    """The metavar of an option's value: from its Python annotation where typer keeps it
    (``type_descriptor``, typer 0.2x), else from its click type (older typer): INTEGER, FLOAT, TEXT,
    ``INTEGER INTEGER INTEGER`` for a tuple."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        return _type_metavar(descriptor.annotation)
    kind = param.type
    members = getattr(kind, "types", None)  # click.Tuple
    if members:
        return " ".join(str(getattr(t, "name", "text")).upper() for t in members)
    name = str(getattr(kind, "name", "text")).upper()
    return {"BOOL": "BOOLEAN", "STRING": "TEXT"}.get(name, name)
