"""Preparing the images of a 2D task into WORK: resumable, reusable, in parallel processes.

:func:`prepare_samples` writes ``WORK/images/<id>.npy`` (one per usable image, saved atomically) and
``WORK/manifest.csv`` (:data:`MANIFEST_COLUMNS`, one row per image, written atomically at the end; an
unusable image is a ``skipped`` row with its reason, never dropped).

Each finished image is journalled at once in ``WORK/prepare-journal.jsonl`` (one JSON line, appended and
flushed after its ``.npy`` is saved), so a crash or Ctrl-C loses no finished image. A line holds the
image's outcome (status, reason, height, width) and its stamp:

- ``options``: what shapes the prepared image (:data:`PREPARE_VERSION`, the source kind, ``max_side``);
- ``input``: the source file's path, size and modification time (ns) (a MedMNIST image: its ``.npz``);
- ``image``: size and modification time of the saved ``.npy``.

A rerun reuses an image (no decoding) only when all three still match, and a skipped image when its
options and source match (unless the skip came from this environment, e.g. pydicom missing); the others
are prepared again and the reason is counted (``options changed: max_side 1024 -> 512``, ``source file
changed``, ``image changed``). The manifest's label and patient come from the current source list, so
a relabelled CSV needs no decoding. At the end the journal is rewritten with one line per image.

``workers`` > 1: images are read, resized and saved by that many processes (chunks of images); the
outputs are byte-identical to one process (each image is prepared alone, the manifest keeps the
source's order).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlm._io import save_npy_atomic, write_csv_atomic, write_text_atomic
from medvlm.data.image_read import Unusable, plane_shape
from medvlm.data.prepare import PrepareResult
from medvlm.data.prepare_state import JOURNAL_FILE, file_stamp
from medvlm.errors import ConfigError, DataError

MANIFEST_COLUMNS = ("id", "patient_id", "label", "status", "reason", "source", "split", "height", "width")
IMAGE_DIR = "images"
#: bump when the arithmetic of a prepared image changes (old images are then prepared again)
PREPARE_VERSION = 1
#: images per task sent to a worker process (at most; fewer when there are few images)
CHUNK = 32

#: what :func:`prepare_samples` does with one image: ``load(sample) -> pixels`` or :class:`Unusable`
Loader = Callable[["ImageSample"], Any]


@dataclass(frozen=True)
class ImageSample:
    """One image of a source: ``id`` (file-safe), ``patient_id``, ``label`` (class index), where it comes
    from (``source``: a file path, or ``npz:split:index``) and the source's own cohort ``split``."""

    id: str
    patient_id: str
    label: int
    source: str
    split: str = ""


class ImagePrepareResult(PrepareResult):
    """:class:`~medvlm.data.prepare.PrepareResult` of an image task: rows are images; ``n_reused``
    counts the usable images taken from an earlier run without decoding."""

    def skipped(self) -> list[tuple[str, str]]:
        """``[(image id, reason), ...]`` of skipped images."""
        return [(str(r["id"]), str(r["reason"])) for r in self.rows if r["status"] == "skipped"]


def class_notes(samples: list[ImageSample], classes: tuple[str, ...], source: str | Path) -> list[str]:
    """A note for each declared class that no image of ``samples`` has."""
    present = {s.label for s in samples}
    return [f"{source}: class {name!r} (label {i}) has no image" for i, name in enumerate(classes)
            if i not in present]


def image_path(work: str | Path, image_id: str) -> Path:
    """A prepared image: ``WORK/images/<id>.npy`` (uint8, or float32 in [0, 1]; ``(H, W)``, ``(H, W, 3)``
    or ``(D, H, W)`` for a MedMNIST 3D set)."""
    return Path(work) / IMAGE_DIR / f"{image_id}.npy"


def write_image_manifest(work: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``WORK/manifest.csv`` (columns :data:`MANIFEST_COLUMNS`) atomically."""
    return write_csv_atomic(work / "manifest.csv", MANIFEST_COLUMNS, rows)


def resolve_workers(workers: int | str) -> int:
    """``--workers N|auto`` -> a number of processes (``auto``: the CPUs this process may use).

    >>> resolve_workers("3"), resolve_workers(1), resolve_workers("auto") >= 1
    (3, 1, True)
    """
    from medvlm.data.prepare import _cpu_count

    text = str(workers).strip().lower()
    if text == "auto":
        return _cpu_count()
    if not text.lstrip("-").isdigit() or int(text) < 1:
        raise ConfigError(f"--workers must be a number of processes (1 or more) or 'auto', got {workers!r}")
    return int(text)


# ------------------------------------------------------------------------------------- one image
def prepare_one(sample: ImageSample, work: Path, load: Loader) -> dict[str, Any]:
    """Prepare one image: its ``.npy`` saved (atomically) and its outcome ``{status, reason, height,
    width, lasting}`` (``lasting`` False: a skip to try again on a rerun). A skipped image's ``.npy``
    from an earlier run is removed (WORK holds the images of ``ok`` rows only)."""
    try:
        pixels = load(sample)
    except Unusable as exc:
        image_path(work, sample.id).unlink(missing_ok=True)
        return {"status": "skipped", "reason": str(exc), "lasting": exc.lasting}
    save_npy_atomic(image_path(work, sample.id), pixels)
    height, width = plane_shape(pixels)
    return {"status": "ok", "reason": "", "height": height, "width": width}


def _prepare_chunk(chunk: list[ImageSample], work: Path, load: Loader) -> list[tuple[str, dict[str, Any]]]:
    """A worker process's task: each image of ``chunk`` prepared, ``[(id, outcome), ...]``."""
    return [(s.id, prepare_one(s, work, load)) for s in chunk]


def manifest_row(sample: ImageSample, outcome: dict[str, Any]) -> dict[str, Any]:
    """The manifest row of one image from its sample and outcome (a fresh or a journalled one)."""
    row = {"id": sample.id, "patient_id": sample.patient_id, "label": sample.label,
           "status": outcome["status"], "reason": outcome.get("reason", ""), "source": sample.source,
           "split": sample.split}
    if outcome["status"] == "ok":
        row.update(height=outcome["height"], width=outcome["width"])
    return row


# ----------------------------------------------------------------------------------- the journal
def stale_reason(entry: dict[str, Any] | None, options: dict[str, Any], source: str, stamp: Any,
                 npy: Path) -> str | None:
    """Why a journalled image cannot be reused (None: reusable; ``"not prepared"``: no entry).

    >>> stale_reason({"options": {"max_side": 1024}, "status": "ok"}, {"max_side": 512}, "a.png", [1, 2],
    ...              Path("/nonexistent"))
    'options changed: max_side 1024 -> 512'
    """
    if entry is None or entry.get("status") not in ("ok", "skipped"):
        return "not prepared"
    old = entry.get("options") or {}
    changed = [f"{k} {old.get(k)} -> {v}" for k, v in options.items() if old.get(k) != v]
    if changed:
        return "options changed: " + ", ".join(changed)
    if entry.get("source") != source or entry.get("input") != stamp or stamp is None:
        return "source file changed"
    if entry["status"] == "skipped":
        return None if entry.get("lasting", True) else "skipped before, tried again"
    saved = file_stamp(npy)
    if saved is None:
        return "image missing"
    return None if saved == entry.get("image") else "image changed"


class ImageJournal:
    """Append-only record of finished images (module docstring); one writer process.

    Each line is flushed as it is written (a killed process loses nothing); the file is synced to disk
    on :meth:`close` (after a power cut the last lines may be missing: those images are prepared again).
    """

    def __init__(self, work: Path, options: dict[str, Any]) -> None:
        self.work = work
        self.options = dict(options)
        self.entries = read_image_journal(work)
        self._fh = open(work / JOURNAL_FILE, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def record(self, sample: ImageSample, outcome: dict[str, Any], stamp: Any) -> None:
        """Append one finished image (its ``.npy`` already saved)."""
        entry = {"id": sample.id, "options": self.options, "source": sample.source, "input": stamp,
                 "status": outcome["status"], "reason": outcome.get("reason", "")}
        if outcome["status"] == "ok":
            entry.update(height=outcome["height"], width=outcome["width"],
                         image=file_stamp(image_path(self.work, sample.id)))
        elif not outcome.get("lasting", True):
            entry["lasting"] = False
        self.entries[sample.id] = entry
        self._fh.write(json.dumps(entry, sort_keys=True) + "\n")
        self._fh.flush()

    def compact(self, ids: Sequence[str]) -> None:
        """Rewrite the journal with the last entry of each of ``ids`` (in that order)."""
        self.close()
        lines = [json.dumps(self.entries[i], sort_keys=True) + "\n" for i in ids if i in self.entries]
        write_text_atomic(self.work / JOURNAL_FILE, "".join(lines))

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()


def read_image_journal(work: Path) -> dict[str, dict[str, Any]]:
    """The last journal entry of each image (a torn last line from a killed run is ignored)."""
    try:
        text = (work / JOURNAL_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    entries: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            entries[entry["id"]] = entry
    return entries


def _previous_ok(work: Path) -> set[str]:
    """Images with an ``ok`` row in an existing manifest (to tell a rebuild from a first build)."""
    import csv

    try:
        with open(work / "manifest.csv", newline="", encoding="utf-8") as fh:
            return {r["id"] for r in csv.DictReader(fh) if r.get("status") == "ok"}
    except (OSError, csv.Error, KeyError, UnicodeDecodeError):
        return set()


# ------------------------------------------------------------------------------------- the loop
def prepare_samples(
    samples: list[ImageSample], out: str | Path, load: Loader, *, workers: int | str = 1,
    options: dict[str, Any] | None = None, source_file: Callable[[ImageSample], str] | None = None,
    progress: bool = False,
) -> ImagePrepareResult:
    """Prepare each sample into ``WORK/images/`` and write the manifest (module docstring).

    ``load(sample) -> pixels`` or :class:`Unusable`; with ``workers`` > 1 it runs in worker processes,
    so it must be picklable (a module-level function or a ``functools.partial`` of one). ``options``:
    what shapes the prepared images besides :data:`PREPARE_VERSION` (a change prepares them again).
    ``source_file(sample)``: the file whose size and time stamp an image (default ``sample.source``).
    ``progress``: a progress bar on a terminal's stderr."""
    from contextlib import closing

    from medvlm.data.synth import _progress

    n_workers = resolve_workers(workers)
    ids = [s.id for s in samples]
    if len({i.casefold() for i in ids}) != len(ids):  # one .npy per image, also on a case-blind disk
        from collections import Counter

        twice = [i for i, n in Counter(i.casefold() for i in ids).items() if n > 1]
        raise DataError(f"image ids must be unique (case ignored); {twice[0]!r} is given to "
                          f"{Counter(i.casefold() for i in ids)[twice[0]]} images")
    work = Path(out).expanduser()
    (work / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    previous_ok = _previous_ok(work)
    journal = ImageJournal(work, {"version": PREPARE_VERSION, **(options or {})})
    stamps: dict[str, Any] = {}  # per source file (a MedMNIST file is stamped once)

    def stamp(sample: ImageSample) -> Any:
        path = source_file(sample) if source_file else sample.source
        if path not in stamps:
            stamps[path] = file_stamp(path)
        return stamps[path]

    outcomes: dict[str, dict[str, Any]] = {}
    todo: list[ImageSample] = []
    rebuilt: list[str] = []
    n_reused = 0
    for s in samples:
        entry = journal.entries.get(s.id)
        why = stale_reason(entry, journal.options, s.source, stamp(s), image_path(work, s.id))
        if why is None:
            outcomes[s.id] = entry  # type: ignore[assignment]
            n_reused += entry["status"] == "ok"  # type: ignore[index]
            continue
        if why != "not prepared":
            rebuilt.append(why)
        elif s.id in previous_ok:
            rebuilt.append("no record of how it was prepared")
        todo.append(s)
    by_id = {s.id: s for s in todo}

    def finished(image_id: str, outcome: dict[str, Any]) -> None:
        outcomes[image_id] = outcome
        journal.record(by_id[image_id], outcome, stamp(by_id[image_id]))
        bar.advance(task)

    with _progress(progress) as bar, closing(journal):
        task = bar.add_task("prepare", total=len(samples), completed=len(samples) - len(todo))
        size = max(1, min(CHUNK, len(todo) // max(4 * n_workers, 1)))
        chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
        n_procs = min(n_workers, len(chunks))
        if n_procs <= 1:
            for s in todo:
                finished(s.id, prepare_one(s, work, load))
        else:
            _run_pool(chunks, work, load, n_procs, finished)

    ordered = [manifest_row(s, outcomes[s.id]) for s in samples]
    write_image_manifest(work, ordered)
    journal.compact([s.id for s in samples])
    return ImagePrepareResult(work=work, rows=ordered, n_reused=n_reused, rebuilt=rebuilt)


def _run_pool(chunks: list[list[ImageSample]], work: Path, load: Loader, n_procs: int,
              finished: Callable[[str, dict[str, Any]], None]) -> None:
    """The chunks prepared by ``n_procs`` processes, each image passed to ``finished`` as its chunk ends;
    on an error or Ctrl-C the chunks not started are cancelled (what finished stays journalled)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from medvlm.data.prepare import _pool_context

    pool = ProcessPoolExecutor(max_workers=n_procs, mp_context=_pool_context())
    try:
        futures = [pool.submit(_prepare_chunk, chunk, work, load) for chunk in chunks]
        for fut in as_completed(futures):
            for image_id, outcome in fut.result():
                finished(image_id, outcome)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
