"""``medvlm list prompts|backends|models|tasks``: what the registries hold, without importing torch."""

from __future__ import annotations

import json
from typing import Any

import typer

from medvlm.cli._app import app

#: what ``medvlm list`` can list
LISTABLE = ("prompts", "backends", "models", "tasks")


def _prompts() -> list[dict[str, Any]]:
    from medvlm.tasks import all_tasks
    from medvlm.vlm.prompts import builtin_prompts, load_prompt

    users: dict[str, list[str]] = {}
    for task in all_tasks():
        for name in task.describe().get("prompts", []):
            users.setdefault(name, []).append(task.name)
    rows = []
    for name in builtin_prompts():
        prompt = load_prompt(name)
        rows.append({"name": name, "tasks": users.get(name, []), "sha": prompt.sha,
                     "text": " ".join(prompt.text.split())})
    return rows


def _backends() -> list[dict[str, Any]]:
    from medvlm.vlm.backends import BACKENDS

    return [{"name": name} for name in BACKENDS.names()]


def _models() -> list[dict[str, Any]]:
    from medvlm.cnn.models import model_names

    return [{"name": name, "kind": "cnn", "option": "train-cnn --model"} for name in model_names()]


def _tasks() -> list[dict[str, Any]]:
    from medvlm.tasks import all_tasks

    return [t.describe() for t in all_tasks()]


def listing(what: str) -> list[dict[str, Any]]:
    """The rows of ``medvlm list WHAT`` (each a dict with at least ``name``); ConfigError for an unknown
    WHAT (with a "did you mean")."""
    from medvlm.registry import check_choice

    check_choice("list", what, LISTABLE)
    return {"prompts": _prompts, "backends": _backends, "models": _models, "tasks": _tasks}[what]()


def _line(what: str, row: dict[str, Any]) -> str:
    if what == "prompts":
        text = row["text"] if len(row["text"]) <= 90 else row["text"][:89] + "..."
        used = f" (tasks: {', '.join(row['tasks'])})" if row["tasks"] else ""
        return f"{row['name']:<14} {text}{used}"
    if what == "tasks":
        classes = ", ".join(f"{i} {c}" for i, c in enumerate(row["classes"]))
        return f"{row['name']:<16} unit {row['unit']:<8} classes {classes} (positive: {row['positive']})"
    if what == "models":
        return f"{row['name']:<14} {row['option']}"
    return row["name"]


@app.command("list")
def list_cmd(
    what: str = typer.Argument(..., metavar="WHAT", help="prompts | backends | models | tasks."),
    as_json: bool = typer.Option(False, "--json", help="One JSON list of objects on stdout."),
) -> None:
    """List what medvlm knows: built-in prompts (--prompt), backends (--backend), CNN models
    (train-cnn --model) or tasks (prepare --task); one line each."""
    rows = listing(what)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(_line(what, row))
