"""Where the stages of a study (:mod:`medvlm.study`) read and write, and what each stage records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvlm.experiment import TINY_MODEL, ExperimentConfig


@dataclass
class StageRecord:
    """What one stage did: ``status`` (done; reused: finished before with the same inputs, so skipped;
    incomplete: finished with failed requests), seconds, a JSON-able summary, outputs."""

    name: str
    fingerprint: str = ""
    status: str = "done"
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


class _Paths:
    """Where each stage reads and writes, and how names in the config resolve to paths."""

    def __init__(self, config: ExperimentConfig, out: Path, base_dir: Path) -> None:
        self.config, self.out, self.base = config, out, base_dir
        self.data = out / "data" if config.data.synthetic else self.resolve(config.data.path)
        self.work = out / "work"
        self.runs = out / "runs"
        self.tiny = out / "models" / "tiny-vlm"

    def resolve(self, value: str | None) -> Path:
        path = Path(str(value)).expanduser()
        return path if path.is_absolute() else (self.base / path).resolve()

    def model(self, name: str) -> str:
        """``tiny`` -> the stand-in model folder; an existing relative path -> absolute; else unchanged."""
        if name == TINY_MODEL:
            return str(self.tiny)
        candidate = self.resolve(name)
        return str(candidate) if candidate.exists() else name

    def prompt(self, prompt: str | None) -> str | None:
        """A prompt file relative to the experiment file -> its path; a built-in name (or None: the
        task's default) as is."""
        if prompt is None:
            return None
        if "/" in prompt or prompt.endswith((".txt", ".md")):
            return str(self.resolve(prompt))
        return prompt

    def run(self, name: str) -> Path:
        return self.runs / name

    def task(self) -> str:
        """The config's task: a registered name, or a task file (relative to the data folder when it is
        there, as a synthetic cohort's ``cxr.yaml``, else to the experiment file)."""
        task = self.config.task
        if not task.lower().endswith((".yaml", ".yml")) or Path(task).is_absolute():
            return task
        in_data = self.data / task
        return str(in_data if in_data.is_file() else self.resolve(task))
