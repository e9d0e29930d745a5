"""Prompt templates as versioned text files (``medvlm/prompts/*.txt``) or a user's own file.

A prompt is identified by its text: :attr:`Prompt.sha` (SHA-256 of the text) is recorded in
``run.json`` and is part of every cache key, so editing a prompt never serves stale answers.

Built-in prompts:

- ``seed``: the study's prompt, word for word.
- ``json``: the same question asking for ``{"choice": ..., "reasoning": ...}`` (for ``--structured json``).
- ``montage``: the seed question, told that the image is a labelled 2x2 montage of four contrasts.
- ``seed-swapped``: the seed prompt with the codes of the two grades exchanged (Low Grade Glioma (1),
  High Grade Glioma (0)); its answers are mapped back (:data:`ANSWER_CODES`), so ``choice`` 0 is still
  LGG. A model that writes the same digit whatever it means shows here.
- ``seed-para1``, ``seed-para2``, ``seed-para3``: paraphrases of the seed question, same codes and
  answer format (for ``consistency --prompt seed --prompt seed-para1 ...``).

>>> p = load_prompt("seed")
>>> p.text.startswith("Classify the brain scan as Low Grade Glioma (0)")
True
>>> p.name, len(p.sha)
('seed', 64)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from medvlm.errors import ConfigError
from medvlm.registry import did_you_mean

#: The answer prefix the prompts ask for ("Choice: <0, 1, or 2>"). The transformers backend ends its
#: chat text with it, and log-prob scoring reads the next token after it.
ANSWER_PREFIX = "Choice:"

#: built-in prompts that write the answers with other digits: the digit of answer i is ``codes[i]``
#: (every other prompt: answer i is written i). The task's parser maps them back.
ANSWER_CODES: dict[str, tuple[str, ...]] = {"seed-swapped": ("1", "0", "2")}


@dataclass(frozen=True)
class Prompt:
    """A prompt: ``name`` (built-in name or file path), ``text`` (sent as is) and ``sha`` (SHA-256 hex);
    ``codes``: the digit it asks for each answer, in answer order (None: answer i is written i)."""

    name: str
    text: str
    sha: str
    codes: tuple[str, ...] | None = None


def _builtin_dir():
    return resources.files("medvlm") / "prompts"


def builtin_prompts() -> list[str]:
    """Names of the built-in prompts (the ``.txt`` files shipped with medvlm)."""
    return sorted(p.name[:-4] for p in _builtin_dir().iterdir() if p.name.endswith(".txt"))


def _make(name: str, raw: str, codes: tuple[str, ...] | None = None) -> Prompt:
    text = raw.rstrip("\r\n")  # files end with a newline; the prompt does not
    if not text.strip():
        raise ConfigError(f"prompt {name!r} is empty")
    return Prompt(name=name, text=text, sha=hashlib.sha256(text.encode("utf-8")).hexdigest(), codes=codes)


def load_prompt(spec: str | Path) -> Prompt:
    """Load a built-in prompt by name (``"seed"``) or a user's prompt from a UTF-8 text file.

    Raises :class:`ConfigError` naming the option for an unknown name or an unreadable file.
    """
    spec_str = str(spec)
    names = builtin_prompts()
    if spec_str in names:
        return _make(spec_str, (_builtin_dir() / f"{spec_str}.txt").read_text(encoding="utf-8"),
                     ANSWER_CODES.get(spec_str))
    path = Path(spec_str).expanduser()
    if path.is_file():
        try:
            return _make(str(path), path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--prompt {path}: cannot read the prompt file ({exc})") from exc
    raise ConfigError(
        f"--prompt {spec_str!r}: neither a built-in prompt {names} nor an existing file."
        + did_you_mean(spec_str, names)
    )
