"""``eval-vlm --save-images N``: N of the images a VLM was asked about, byte for byte, in ``RUN/images/``.

:class:`ImageSaver` wraps the ``(meta, png)`` stream that :func:`medvlm.vlm.engine.ask_images` consumes
(``meta`` = ``(patient_id, orientation, slice_index)``) and keeps N of those PNGs unchanged: the very
bytes that went into each request and its cache key (:func:`medvlm.vlm.types.cache_key` hashes
:func:`~medvlm.vlm.types.image_sha` of them). It prefers breadth: the first image of each
(patient, orientation) in the order asked, then, if fewer than N such pairs exist, the next images in
order. Files are named ``<patient>_<orientation>_<slice>.png`` (characters outside ``[A-Za-z0-9._-]``
become ``_``) so a reader can find their rows in ``slices.csv``; ``images/index.csv`` lists them:

``file,patient_id,orientation,slice_index,sha256,bytes`` (``sha256`` of the file's bytes).

A 2D image task's stream has ``meta`` = ``(patient_id, image_id)``: breadth is then the first image of
each patient, files are named ``<image_id>.png`` (sanitised alike) and the index is
``file,patient_id,image_id,sha256,bytes`` (:data:`IMAGE_INDEX_COLUMNS`), matching ``slices.csv``'s keys.

With ``--image none`` the requests carry no image (``png == b""``): nothing is saved, and
:attr:`ImageSaver.note` says why (the index is then written with its header only).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from medvlm.vlm.types import image_sha

#: the folder (inside the run) and the index file the saved images and their list go to
IMAGES_DIR = "images"
INDEX_FILE = "index.csv"
INDEX_COLUMNS = ["file", "patient_id", "orientation", "slice_index", "sha256", "bytes"]
#: the index of an image task's run (metas ``(patient_id, image_id)``)
IMAGE_INDEX_COLUMNS = ["file", "patient_id", "image_id", "sha256", "bytes"]
NO_IMAGE_NOTE = "--image none sends the prompt without an image: there is no image to save"


def image_task_file_name(image_id: Any) -> str:
    """``<image_id>.png`` (an image task's saved image) with unsafe characters replaced by ``_``.

    >>> image_task_file_name("CXR0001_1"), image_task_file_name("../x y")
    ('CXR0001_1.png', '_x_y.png')
    """
    return _safe(str(image_id))


def image_file_name(patient_id: Any, orientation: Any, slice_index: Any) -> str:
    """``<patient>_<orientation>_<slice>.png`` with unsafe characters replaced by ``_``.

    >>> image_file_name("BraTS20_Training_001", "axial", 40)
    'BraTS20_Training_001_axial_40.png'
    >>> image_file_name("a/b c", "axial", 3)
    'a_b_c_axial_3.png'
    """
    stem = "_".join(str(part) for part in (patient_id, orientation, slice_index))
    return _safe(stem)


def _safe(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".") + ".png"


class ImageSaver:
    """Keeps up to ``n`` of the images passed through :meth:`tap`; :meth:`write` puts them in
    ``run/images/``.

    ``n`` 0: :meth:`tap` passes the stream through untouched and :meth:`write` writes nothing.
    """

    def __init__(self, run: str | Path, n: int) -> None:
        self.folder = Path(run) / IMAGES_DIR
        self.n = int(n)
        self._first: list[tuple[int, tuple, bytes]] = []  # first image of a (patient, orientation)
        self._rest: list[tuple[int, tuple, bytes]] = []  # later images, in order (at most n kept)
        self._pairs: set[tuple[Any, Any]] = set()
        self._names: set[str] = set()
        self.n_images = 0  # images seen (with bytes)
        self.n_empty = 0  # requests without an image

    def tap(self, images: Iterable[tuple[Any, bytes]]) -> Iterator[tuple[Any, bytes]]:
        """Yield ``images`` unchanged (lazily), remembering the ones to save."""
        for order, (meta, png) in enumerate(images):
            if self.n > 0:
                self._see(order, meta, png)
            yield meta, png

    def _see(self, order: int, meta: Any, png: bytes) -> None:
        if not png:
            self.n_empty += 1
            return
        self.n_images += 1
        key = tuple(meta) if isinstance(meta, (tuple, list)) else (meta,)
        pair = key[:1] if len(key) == 2 else key[:2]  # an image task: one per patient first
        if pair not in self._pairs and len(self._first) < self.n:
            self._pairs.add(pair)
            self._first.append((order, key, png))
        elif len(self._first) + len(self._rest) < self.n:
            self._rest.append((order, key, png))

    @property
    def note(self) -> str | None:
        """Why fewer images were saved than asked for (None: nothing to explain)."""
        if self.n > 0 and self.n_images == 0 and self.n_empty:
            return NO_IMAGE_NOTE
        return None

    def write(self) -> list[dict[str, Any]]:
        """Write the kept images and ``index.csv`` (asked order); returns the index rows (none when
        ``n`` is 0, and then no folder is made)."""
        import csv
        import io

        from medvlm._io import write_bytes_atomic, write_text_atomic

        if self.n <= 0:
            return []
        chosen = sorted([*self._first, *self._rest][: self.n], key=lambda item: item[0])
        self.folder.mkdir(parents=True, exist_ok=True)
        before = {row.get("file") for row in read_index(self.folder.parent) or []}
        rows = []
        images = bool(chosen) and all(len(key) == 2 for _o, key, _p in chosen)  # (patient_id, image_id)
        for _order, key, png in chosen:
            parts = (*key, "", "", "")[:3]
            name = image_task_file_name(key[1]) if images else image_file_name(*parts)
            stem, k = name[:-4], 2
            while name in self._names:  # two metas that sanitise alike: keep both
                name, k = f"{stem}-{k}.png", k + 1
            self._names.add(name)
            write_bytes_atomic(self.folder / name, png)
            where = ({"image_id": parts[1]} if images
                     else {"orientation": parts[1], "slice_index": parts[2]})
            rows.append({"file": name, "patient_id": parts[0], **where, "sha256": image_sha(png),
                         "bytes": len(png)})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=IMAGE_INDEX_COLUMNS if images else INDEX_COLUMNS,
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.folder / INDEX_FILE, buffer.getvalue())
        for stale in sorted(f for f in before - self._names if f and "/" not in f and f.endswith(".png")):
            (self.folder / stale).unlink(missing_ok=True)  # a rerun's images replace the last run's
        return rows


def read_index(run: str | Path) -> list[dict[str, str]] | None:
    """The rows of ``run/images/index.csv`` (None when the run saved no images)."""
    import csv

    path = Path(run) / IMAGES_DIR / INDEX_FILE
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
