"""Consistency and robustness of a VLM's answer: the same image and prompt, asked N times.

The study asked Llama-3.2-Vision about one HGG and one LGG image 95 times each: 95/95 HGG for the HGG
image, 77/95 HGG for the LGG image. :func:`run_consistency` makes that a repeatable measurement and
widens it:

- one slice of one patient (the study; ``--patient``), or one slice per patient of a cohort (default
  the central tumour slice of each);
- prompt-paraphrase robustness (several prompts) and a temperature sweep (several temperatures);
- sampling settings explicit and recorded (temperature, top-p, seed per repeat), defaulting to the
  model's own generation defaults (:func:`resolve_sampling`).

Requests go through :func:`medvlm.vlm.engine.ask_images` and its response cache, keyed by the repeat
index: rerunning sends nothing, raising ``--repeats`` sends only the new repeats.

Answer categories: ``"0"`` LGG, ``"1"`` HGG, ``"2"`` no glioma, ``"unparsed"`` (an answer that could
not be read is a category of its own, never a guess). Truth labels: LGG 0, HGG 1.

Pure summary functions (doctested): :func:`count_answers`, :func:`majority_answer`, :func:`agreement`,
:func:`entropy_bits`, :func:`flip_rate`, :func:`expected_accuracy`, :func:`fleiss_kappa`,
:func:`summarize_answers` (one image), :func:`summarize_images` (several). Figures for the report:
:func:`agreement_figure` (answer shares per image across a cohort; also the study's HGG/LGG pair) and
:func:`temperature_figure` (a temperature sweep).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medvlm.errors import ConfigError, DataError
from medvlm.vlm.options import BackendOptions

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

    from medvlm.vlm.backends import Backend
    from medvlm.vlm.types import Decoding

#: Answer categories, in this order everywhere (``counts`` keys, Fleiss' kappa columns).
CATEGORIES = ("0", "1", "2", "unparsed")
#: ``consistency.csv``: the contract's columns, then the label, the prompt and the sampling settings of
#: each call (``temperature``/``top_p`` empty = the server's own default; ``seed`` = seed + repeat), and
#: ``mass`` (probability mass of the three answers under log-prob scoring).
CSV_COLUMNS = ["patient_id", "orientation", "slice_index", "repeat", "choice", "p_lgg", "p_hgg", "p_ng",
               "raw", "label", "prompt", "temperature", "top_p", "seed", "mass"]
FAILURE_COLUMNS = ["patient_id", "orientation", "slice_index", "repeat", "prompt", "temperature", "error"]
#: what a tie between the most frequent answers breaks to, in order of preference
_TIE_ORDER = {"hgg": ("1", "0", "2", "unparsed"), "lgg": ("0", "1", "2", "unparsed")}


# ============================================================================================ pure maths
def category(choice: Any) -> str:
    """One answer -> its category: 0/1/2 (int, float or digit string) -> ``"0"/"1"/"2"``, anything else
    (None, NaN, empty, other numbers) -> ``"unparsed"``.

    >>> [category(c) for c in (1, 0.0, "2", None, float("nan"), "", 3)]
    ['1', '0', '2', 'unparsed', 'unparsed', 'unparsed', 'unparsed']
    """
    if choice is None:
        return "unparsed"
    try:
        value = float(choice)
    except (TypeError, ValueError):
        return "unparsed"
    if math.isnan(value) or value not in (0.0, 1.0, 2.0):
        return "unparsed"
    return str(int(value))


def count_answers(choices: Iterable[Any]) -> dict[str, int]:
    """Counts of the four categories (keys ``"0", "1", "2", "unparsed"``, all present).

    >>> count_answers([1, 1, 0, None, 2, 1])
    {'0': 1, '1': 3, '2': 1, 'unparsed': 1}
    """
    counts = dict.fromkeys(CATEGORIES, 0)
    for c in choices:
        counts[category(c)] += 1
    return counts


def _n(counts: Mapping[str, int]) -> int:
    return int(sum(int(counts.get(k, 0)) for k in CATEGORIES))


def majority_answer(counts: Mapping[str, int], *, tie_break: Literal["hgg", "lgg"] = "hgg") -> str | None:
    """The most frequent category (may be ``"unparsed"``); None when there is no answer.

    A tie between the most frequent categories breaks to HGG (``tie_break="hgg"``, as eval-vlm's
    default), else LGG, then no glioma, then unparsed (``"lgg"``: LGG first).

    >>> majority_answer({"0": 18, "1": 77, "2": 0, "unparsed": 0})
    '1'
    >>> tied = {"0": 2, "1": 2, "2": 0, "unparsed": 0}
    >>> majority_answer(tied), majority_answer(tied, tie_break="lgg")
    ('1', '0')
    >>> majority_answer({"0": 1, "1": 0, "2": 0, "unparsed": 3})
    'unparsed'
    """
    if _n(counts) == 0:
        return None
    top = max(int(counts.get(k, 0)) for k in CATEGORIES)
    return next(k for k in _TIE_ORDER[tie_break] if int(counts.get(k, 0)) == top)


def is_tie(counts: Mapping[str, int]) -> bool:
    """True when two or more categories share the highest count (and there is an answer).

    >>> is_tie({"0": 2, "1": 2}), is_tie({"0": 1, "1": 2})
    (True, False)
    """
    values = [int(counts.get(k, 0)) for k in CATEGORIES]
    return max(values) > 0 and values.count(max(values)) > 1


def agreement(counts: Mapping[str, int]) -> float | None:
    """Share of the majority answer among all answers (unparsed included); None without answers.

    >>> round(agreement({"0": 18, "1": 77, "2": 0, "unparsed": 0}), 4)
    0.8105
    """
    n = _n(counts)
    return None if n == 0 else max(int(counts.get(k, 0)) for k in CATEGORIES) / n


def entropy_bits(counts: Mapping[str, int]) -> float | None:
    """Shannon entropy (bits) of the answer distribution over the four categories: 0 when every answer
    is the same, 1 for an even split of two, 2 for an even split of four; None without answers.

    >>> entropy_bits({"0": 5, "1": 5, "2": 0, "unparsed": 0})
    1.0
    >>> entropy_bits({"0": 1, "1": 1, "2": 1, "unparsed": 1}), entropy_bits({"1": 95})
    (2.0, 0.0)
    >>> round(entropy_bits({"0": 18, "1": 77}), 4)
    0.7004
    """
    n = _n(counts)
    if n == 0:
        return None
    h = -sum((c / n) * math.log2(c / n) for c in (int(counts.get(k, 0)) for k in CATEGORIES) if c)
    return abs(h)  # no -0.0


def flips(choices: Sequence[Any]) -> tuple[int, int]:
    """(number of consecutive pairs whose categories differ, number of consecutive pairs).

    >>> flips([1, 1, 0, 0, None, None, 1])
    (3, 6)
    """
    cats = [category(c) for c in choices]
    changed = sum(a != b for a, b in zip(cats, cats[1:], strict=False))
    return changed, max(len(cats) - 1, 0)


def flip_rate(choices: Sequence[Any]) -> float | None:
    """Share of consecutive repeats (in repeat order) whose answer differs from the previous one;
    None for fewer than two answers. 0 = never changes its mind; about ``1 - sum p_k^2`` for
    independent draws.

    >>> flip_rate([1, 1, 0, 0, None, None, 1])
    0.5
    >>> flip_rate([1]) is None
    True
    """
    changed, pairs = flips(choices)
    return None if pairs == 0 else changed / pairs


def _label(label: Any) -> int | None:
    if label is None:
        return None
    try:
        value = float(label)
    except (TypeError, ValueError):
        return None
    if math.isnan(value):
        return None
    if value not in (0.0, 1.0):
        raise ValueError(f"label must be 0 (LGG) or 1 (HGG); got {label!r}")
    return int(value)


def expected_accuracy(choices: Sequence[Any], label: Any) -> float | None:
    """Mean accuracy of single answers against the truth ``label`` (LGG 0, HGG 1): the chance that one
    call, picked at random, is right. "No glioma" and unparsed answers count as wrong. None without a
    label or without answers.

    >>> expected_accuracy([1, 1, 1, 0, None], 0)
    0.2
    >>> expected_accuracy([1, 1], None) is None
    True
    """
    lab = _label(label)
    if lab is None or len(choices) == 0:
        return None
    return sum(category(c) == str(lab) for c in choices) / len(choices)


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa: agreement among repeated answers beyond chance, across images.

    Args:
        table: one row per image (subject), one column per category, ``table[i][j]`` = how many of the
            image's repeats (raters) gave category j. Rows may have different totals (e.g. after failed
            calls): the per-image agreement ``P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1))`` and the
            category shares ``p_j = sum_i n_ij / sum_i n_i`` then follow Fleiss (1971) with ``n_i`` in
            place of a constant n (the same as Fleiss for equal totals). Rows with fewer than 2 answers
            are left out.

    Returns:
        ``(mean P_i - P_e) / (1 - P_e)`` with ``P_e = sum_j p_j^2``; 1 = perfect agreement, 0 = what
        chance gives, negative = less. None with fewer than 2 usable images, or when every answer falls
        into one category (``P_e = 1``: kappa undefined).

    The textbook example (Fleiss' kappa on Wikipedia: 10 subjects, 14 raters, 5 categories):

    >>> wiki = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    ...         [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    >>> round(fleiss_kappa(wiki), 3)
    0.21
    >>> fleiss_kappa([[5, 0], [0, 5]]), fleiss_kappa([[5, 0], [5, 0]]) is None
    (1.0, True)
    """
    rows = [[int(v) for v in row] for row in table]
    rows = [row for row in rows if sum(row) >= 2]
    if len(rows) < 2:
        return None
    width = max(len(row) for row in rows)
    rows = [row + [0] * (width - len(row)) for row in rows]
    total = sum(sum(row) for row in rows)
    p = [sum(row[j] for row in rows) / total for j in range(width)]
    p_e = sum(x * x for x in p)
    p_i = [sum(v * (v - 1) for v in row) / (sum(row) * (sum(row) - 1)) for row in rows]
    p_bar = sum(p_i) / len(p_i)
    if math.isclose(p_e, 1.0, rel_tol=0.0, abs_tol=1e-12):
        return None
    return (p_bar - p_e) / (1 - p_e)


def summarize_answers(choices: Sequence[Any], *, label: Any = None,
                      tie_break: Literal["hgg", "lgg"] = "hgg") -> dict[str, Any]:
    """Summary of one image's repeated answers (``choices`` in repeat order; 0/1/2, None = unparsed).

    Keys: ``n``, ``counts`` {"0","1","2","unparsed"}, ``majority`` (a category key, see
    :func:`majority_answer`), ``tie`` (the top counts tied), ``agreement``, ``entropy`` (bits),
    ``flip_rate``, ``label`` (LGG 0 / HGG 1 or None), ``consensus_correct`` (1.0 when the majority
    answer equals the label, 0.0 when not, None without label), ``expected_accuracy``.

    >>> s = summarize_answers([1] * 77 + [0] * 18, label=0)
    >>> s["counts"], s["majority"], round(s["agreement"], 3), round(s["entropy"], 3)
    ({'0': 18, '1': 77, '2': 0, 'unparsed': 0}, '1', 0.811, 0.7)
    >>> s["consensus_correct"], round(s["expected_accuracy"], 3), round(s["flip_rate"], 3)
    (0.0, 0.189, 0.011)
    """
    counts = count_answers(choices)
    majority = majority_answer(counts, tie_break=tie_break)
    lab = _label(label)
    return {
        "n": _n(counts),
        "counts": counts,
        "majority": majority,
        "tie": is_tie(counts),
        "agreement": agreement(counts),
        "entropy": entropy_bits(counts),
        "flip_rate": flip_rate(choices),
        "label": lab,
        "consensus_correct": None if lab is None or majority is None else float(majority == str(lab)),
        "expected_accuracy": expected_accuracy(choices, lab),
    }


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def summarize_images(images: Sequence[tuple[Sequence[Any], Any]], *,
                     tie_break: Literal["hgg", "lgg"] = "hgg") -> dict[str, Any]:
    """Summary over several images, each ``(choices in repeat order, label or None)``.

    The contract's keys are over *all* answers pooled: ``n``, ``counts``, ``majority``, ``agreement``,
    ``entropy``. Then, over images: ``n_images``; ``flip_rate`` (flips / consecutive pairs, pooled within
    images); ``mean_agreement``, ``mean_entropy`` (means of the per-image values); ``fleiss_kappa``
    (:func:`fleiss_kappa` over the images' category counts; None for one image); ``n_labelled``;
    ``consensus_accuracy`` (share of labelled images whose majority answer equals the label);
    ``expected_accuracy`` (mean over labelled images of their :func:`expected_accuracy`).

    >>> s = summarize_images([([1] * 95, 1), ([1] * 77 + [0] * 18, 0)])
    >>> s["n"], s["counts"]["1"], s["majority"], s["n_images"], s["consensus_accuracy"]
    (190, 172, '1', 2, 0.5)
    >>> round(s["expected_accuracy"], 4), round(s["mean_agreement"], 4)
    (0.5947, 0.9053)
    """
    per = [summarize_answers(c, label=lab, tie_break=tie_break) for c, lab in images]
    pooled = dict.fromkeys(CATEGORIES, 0)
    for s in per:
        for k in CATEGORIES:
            pooled[k] += s["counts"][k]
    changed = pairs = 0
    for choices, _ in images:
        c, p = flips(choices)
        changed, pairs = changed + c, pairs + p
    labelled = [s for s in per if s["label"] is not None and s["n"]]
    return {
        "n": _n(pooled),
        "counts": pooled,
        "majority": majority_answer(pooled, tie_break=tie_break),
        "agreement": agreement(pooled),
        "entropy": entropy_bits(pooled),
        "n_images": len(per),
        "flip_rate": changed / pairs if pairs else None,
        "mean_agreement": _mean(s["agreement"] for s in per),
        "mean_entropy": _mean(s["entropy"] for s in per),
        "fleiss_kappa": fleiss_kappa([[s["counts"][k] for k in CATEGORIES] for s in per]),
        "n_labelled": len(labelled),
        "consensus_accuracy": _mean(s["consensus_correct"] for s in labelled),
        "expected_accuracy": _mean(s["expected_accuracy"] for s in labelled),
    }


# ======================================================================================== configuration
Temperature = Annotated[float, Field(ge=0.0)]


class ConsistencyConfig(BackendOptions):
    """Resolved settings of one ``medvlm consistency`` run (recorded in ``run.json``; no secrets).

    The backend, model and request fields come from :class:`~medvlm.vlm.options.BackendOptions`.
    ``patients`` empty: one slice per patient of ``cohort`` (fold ``fold`` for train/val).
    ``slice_index`` None: the central tumour slice of each patient along ``orientation``.
    ``prompts``: built-in names or files (several = paraphrase robustness). ``temperatures`` empty: the
    model's own default; several = a sweep. ``top_p`` None: the model's own default. ``seed``: base
    sampling seed (request seed = seed + repeat index), None = send none.
    """

    model_config = ConfigDict(extra="forbid")

    patients: list[str] = Field(default_factory=list)
    orientation: str = "axial"
    slice_index: int | None = None
    cohort: str = "test"
    fold: int = Field(0, ge=0)
    prompts: list[str] = Field(default_factory=lambda: ["seed"])
    temperatures: list[Temperature] = Field(default_factory=list)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    repeats: int = Field(95, ge=1)
    tie_break: Literal["hgg", "lgg"] = "hgg"


class Sampling(BaseModel):
    """The sampling settings of one series of repeats, as sent. ``temperature``/``top_p`` None = not
    chosen here: the server applies its (the model's) own default (the field is left out of the request).
    ``source`` says where each value came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None
    top_p: float | None
    seed: int | None
    source: str


def model_generation_defaults(model: str) -> tuple[dict[str, Any], str]:
    """The model's own sampling defaults from its ``generation_config.json``: ``({"do_sample",
    "temperature", "top_p"}, where they came from)``. A local folder is read directly; a hub name through
    ``transformers.GenerationConfig.from_pretrained`` (offline cache only); without one, transformers'
    defaults (greedy)."""
    defaults = {"do_sample": False, "temperature": 1.0, "top_p": 1.0}
    path = Path(model).expanduser() / "generation_config.json"
    data: dict[str, Any] | None = None
    source = "transformers defaults (no generation_config.json)"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            source = f"{path}"
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not readable JSON ({exc})") from exc
    elif not Path(model).expanduser().exists():
        try:
            from transformers import GenerationConfig

            data = GenerationConfig.from_pretrained(model, local_files_only=True).to_dict()
            source = f"generation_config of {model}"
        except Exception:  # noqa: BLE001 - any failure means: no generation config available here
            data = None
    for key in defaults:
        if data and data.get(key) is not None:
            defaults[key] = data[key]
    return defaults, source


def resolve_sampling(config: ConsistencyConfig) -> list[Sampling]:
    """One :class:`Sampling` per temperature of the sweep (one when no ``--temperature`` is given).

    Values not given fall back to the model's own defaults:

    - ``transformers``: the model's ``generation_config.json`` (``do_sample`` false -> temperature 0,
      greedy; true -> its ``temperature`` and ``top_p``);
    - ``openai``: left to the server (None: the field is left out of the request; vLLM and Ollama then
      apply the model's generation config);
    - ``mock``: temperature 1.0, top-p 1.0 (its answers vary per repeat).
    """
    given_t = list(dict.fromkeys(float(t) for t in config.temperatures))
    if config.backend == "transformers":
        gen, where = model_generation_defaults(config.model)
        t_default = float(gen["temperature"]) if gen["do_sample"] else 0.0
        p_default: float | None = float(gen["top_p"]) if gen["do_sample"] else 1.0
        what = "model default" + ("" if gen["do_sample"] else " (do_sample false: greedy)") + f" from {where}"
    elif config.backend == "openai":
        t_default, p_default, what = None, None, "server default (not sent)"  # type: ignore[assignment]
    else:
        t_default, p_default, what = 1.0, 1.0, f"{config.backend} default"
    top_p = config.top_p if config.top_p is not None else p_default
    out = []
    for t in given_t or [t_default]:
        source = (f"temperature {'--temperature' if given_t else what}; "
                  f"top_p {'--top-p' if config.top_p is not None else what}")
        out.append(Sampling(temperature=t, top_p=top_p, seed=config.seed, source=source))
    return out


def decoding_for(sampling: Sampling, config: ConsistencyConfig) -> Decoding:
    """The engine's :class:`~medvlm.vlm.types.Decoding` for one sampling series. A value left to the
    server (None) stays None: the openai backend then leaves it out of the request, and None is a
    cache-key value of its own."""
    from medvlm.vlm.types import Decoding

    return Decoding(scoring=config.scoring, max_new_tokens=config.max_new_tokens,
                    temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed,
                    structured=config.structured)


# =============================================================================================== images
@dataclass(frozen=True)
class ConsistencyImage:
    """One image asked N times: patient, orientation, canonical slice index, truth label, PNG bytes."""

    patient_id: str
    orientation: str
    slice_index: int
    label: int | None
    png: bytes = field(repr=False)


def _row_label(row: Any) -> int | None:
    try:
        value = row["label"]
    except (KeyError, IndexError):
        return None
    try:
        return None if value is None or str(value) in ("", "<NA>", "nan") else int(value)
    except (TypeError, ValueError):
        return None


def select_images(work: str | Path, config: ConsistencyConfig) -> list[ConsistencyImage]:
    """Render the images of the run: for each patient (``config.patients`` or the cohort), slice
    ``config.slice_index`` or the central tumour slice along ``config.orientation``, exactly as
    ``eval-vlm`` renders it (:func:`medvlm.data.slices.patient_slices`).

    Raises :class:`DataError` for an unknown or skipped patient, a slice out of range or a patient
    without a tumour extent (one line naming the option and the patient).
    """
    from medvlm.data.cohorts import load_cohort, read_manifest
    from medvlm.data.slices import AXIS, ORIENTATIONS, load_canonical, parse_modalities, patient_slices
    from medvlm.registry import check_choice, did_you_mean

    check_choice("orientation", config.orientation, ORIENTATIONS)
    modalities = parse_modalities(config.modalities)
    work = Path(work)
    manifest = read_manifest(work)
    rows = {str(r["patient_id"]): r for r in manifest.to_dict("records")}
    if config.patients:
        ids = list(dict.fromkeys(config.patients))
        for pid in ids:
            if pid not in rows:
                raise DataError(f"--patient {pid!r}: no such patient in {work / 'manifest.csv'}."
                                + did_you_mean(pid, list(rows)))
            if rows[pid].get("status") != "ok":
                reason = rows[pid].get("reason") or "no reason given"
                raise DataError(f"--patient {pid}: skipped by prepare ({reason}); pick another patient")
    else:
        ids = load_cohort(work, config.cohort, fold=config.fold).patient_ids
    axis = AXIS[config.orientation]
    letter = "xyz"[axis]
    images = []
    for pid in ids:
        row = dict(rows[pid])
        path = row.get(modalities[0])
        if not path or not Path(str(path)).is_file():
            raise DataError(f"patient {pid}: {modalities[0]} file {path!r} does not exist")
        size = load_canonical(path, pid)[0].shape[axis]
        if config.slice_index is not None:
            index = int(config.slice_index)
            if not 0 <= index < size:
                raise DataError(f"--slice {index}: out of range for patient {pid} along {config.orientation} "
                                f"(valid 0..{size - 1})")
        else:
            index = central_tumour_slice(row, config.orientation, size)
        # render exactly one slice with the engine's renderer: a one-slice "tumour" range at ``index``
        one = {**row, f"tumour_{letter}_min": index, f"tumour_{letter}_max": index}
        [image] = patient_slices(one, config.orientation, selection="tumour", modalities=modalities)
        images.append(ConsistencyImage(pid, config.orientation, index, _row_label(row), image.png))
    return images


def central_tumour_slice(row: Mapping[str, Any], orientation: str, size: int) -> int:
    """The central slice of the tumour's extent along ``orientation`` (the manifest's inclusive
    ``tumour_*_min..max``, clipped to the volume; ``(lo + hi) // 2``), the slice eval-vlm's
    ``--slices central:1`` picks.

    >>> central_tumour_slice({"patient_id": "P", "tumour_z_min": 3, "tumour_z_max": 6}, "axial", 10)
    4
    """
    from medvlm.data.slices import AXIS, slice_indices

    try:
        [index] = slice_indices(row, orientation, "central:1", size)
    except DataError as exc:
        letter = "xyz"[AXIS[orientation]]
        pid = row.get("patient_id", "?")
        raise DataError(f"patient {pid}: no usable tumour extent along {letter} in the manifest ({exc}); "
                        "give --slice N") from None
    return int(index)


# ================================================================================================== run
@dataclass
class ConsistencyResult:
    """What :func:`run_consistency` wrote and counted. ``exit_code``: 0, or 1 when some calls failed."""

    out: Path
    summary: dict[str, Any]
    n_calls: int
    n_failed: int
    n_sent: int
    n_cached: int
    notes: list[str]
    elapsed_s: float

    @property
    def exit_code(self) -> int:
        return 1 if self.n_failed else 0


def _fmt_t(value: float | None) -> str:
    return "default" if value is None else f"{value:g}"


def _group_summary(frame: pd.DataFrame, keys: list[str], tie_break: str) -> tuple[dict[str, Any], list]:
    """Summary over the images of ``frame`` (image = one combination of ``keys``), and the per-image
    groups in frame order."""
    import pandas as pd

    groups = []
    for _, g in frame.groupby(keys, sort=False, dropna=False):
        g = g.sort_values("repeat", kind="stable")
        choices = [None if pd.isna(c) else int(c) for c in g["choice"]]
        groups.append((g.iloc[0], choices))
    summary = summarize_images([(c, r["label"]) for r, c in groups], tie_break=tie_break)  # type: ignore[arg-type]
    return summary, groups


def run_consistency(work: str | Path, out: str | Path, config: ConsistencyConfig, *,
                    backend: Backend | None = None, console: Any = None) -> ConsistencyResult:
    """Run ``medvlm consistency``: each selected image, each prompt, each temperature, ``repeats`` times.

    Writes into ``out``:

    - ``consistency.csv`` -- one row per answered call (:data:`CSV_COLUMNS`; ``choice`` empty when
      unparsed), ordered by prompt, temperature, patient, repeat;
    - ``summary.json`` -- the contract's keys over all answers (``n``, ``counts``, ``majority``,
      ``agreement``, ``entropy``), the cross-image summary of :func:`summarize_images`, ``repeats``,
      ``n_failed``, ``sampling`` (one entry per temperature), ``per_image`` (one entry per image x
      prompt x temperature, :func:`summarize_answers` plus its identity), and ``per_prompt`` /
      ``per_temperature`` (one :func:`summarize_images` entry per prompt / temperature) when the run has
      several;
    - ``failures.csv`` (calls that failed after retries; retried by the next run), ``run.json``
      (kind ``consistency``) and ``cache.sqlite`` (unless ``config.cache`` points elsewhere).
    """
    import pandas as pd

    from medvlm._io import write_json_atomic, write_text_atomic
    from medvlm.registry import check_choice
    from medvlm.runinfo import write_run_info
    from medvlm.vlm.backends import BACKENDS, make_backend
    from medvlm.vlm.cache import ResponseCache
    from medvlm.vlm.engine import ask_images, csv_text
    from medvlm.vlm.prompts import load_prompt

    start = time.monotonic()
    work, out = Path(work), Path(out)
    check_choice("backend", config.backend, BACKENDS.names())
    prompts = [load_prompt(p) for p in dict.fromkeys(config.prompts)]
    shas = [p.sha for p in prompts]
    if len(set(shas)) != len(shas):
        dup = next(p.name for i, p in enumerate(prompts) if p.sha in shas[:i])
        raise ConfigError(f"--prompt {dup}: the same text as another --prompt; give each paraphrase once")
    samplings = resolve_sampling(config)
    decodings = [decoding_for(s, config) for s in samplings]
    images = select_images(work, config)
    notes: list[str] = []
    if config.repeats > 1:
        if config.scoring == "logprobs" and config.backend == "transformers":
            notes.append("log-prob scoring with the transformers backend is one deterministic forward pass: "
                         "every repeat gives the same answer")
        elif any(s.temperature == 0 for s in samplings) and config.backend != "openai":
            notes.append("temperature 0 is greedy decoding: every repeat gives the same answer; pass "
                         "--temperature T (> 0) to sample")

    out.mkdir(parents=True, exist_ok=True)
    run_config = {
        **config.model_dump(mode="json"), "work": str(work.resolve()),
        "prompts_resolved": [{"name": p.name, "sha": p.sha, "text": p.text} for p in prompts],
        "sampling": [s.model_dump(mode="json") for s in samplings],
        "images": [{"patient_id": im.patient_id, "orientation": im.orientation, "slice_index": im.slice_index,
                    "label": im.label} for im in images],
    }
    write_run_info(out, kind="consistency", config=run_config)

    own_backend = backend is None
    backend = backend or make_backend(config.backend_config())
    cache = ResponseCache(Path(config.cache) if config.cache else out / "cache.sqlite")
    rows, failures = [], []
    n_sent = n_cached = 0
    try:
        for i_prompt, prompt in enumerate(prompts):
            for i_sampling, (sampling, decoding) in enumerate(zip(samplings, decodings, strict=True)):
                label = f"consistency {Path(prompt.name).name}, T={_fmt_t(sampling.temperature)}"
                asked = ask_images(backend, ((i, im.png) for i, im in enumerate(images)), prompt=prompt,
                                   decoding=decoding, repeats=config.repeats, cache=cache,
                                   total=len(images) * config.repeats, progress=config.progress,
                                   description=label)
                n_sent, n_cached = n_sent + asked.n_sent, n_cached + asked.n_cached
                for a in asked.answers:
                    im, r = images[a.meta], a.response
                    ident = {"patient_id": im.patient_id, "orientation": im.orientation,
                             "slice_index": im.slice_index, "repeat": a.repeat}
                    if r.failed:
                        failures.append({**ident, "prompt": prompt.name, "temperature": sampling.temperature,
                                         "error": r.error})
                        continue
                    p = r.probs or (None, None, None)
                    rows.append({**ident, "choice": r.choice, "p_lgg": p[0], "p_hgg": p[1], "p_ng": p[2],
                                 "raw": r.raw or "", "label": im.label, "prompt": prompt.name,
                                 "temperature": sampling.temperature, "top_p": sampling.top_p,
                                 "seed": decoding.request_seed(a.repeat), "mass": r.mass,
                                 "_image": a.meta, "_prompt": i_prompt, "_sampling": i_sampling})
    finally:
        cache.close()
        if own_backend:
            backend.close()

    frame = pd.DataFrame(rows, columns=[*CSV_COLUMNS, "_image", "_prompt", "_sampling"])
    frame = frame.sort_values(["_prompt", "_sampling", "_image", "repeat"], kind="stable")
    frame = frame.reset_index(drop=True)
    for col in ("choice", "label", "seed", "slice_index", "repeat"):
        frame[col] = frame[col].astype("Int64")
    for col in ("p_lgg", "p_hgg", "p_ng", "mass", "temperature", "top_p"):
        frame[col] = frame[col].astype("float64")
    fail_frame = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
    if len(fail_frame):
        fail_frame = fail_frame.sort_values(["prompt", "temperature", "patient_id", "repeat"], kind="stable")
    write_text_atomic(out / "consistency.csv", csv_text(frame[CSV_COLUMNS]))
    write_text_atomic(out / "failures.csv", csv_text(fail_frame))

    summary = build_summary(frame, prompts=[p.name for p in prompts], samplings=samplings,
                            repeats=config.repeats, n_failed=len(failures), tie_break=config.tie_break)
    write_json_atomic(out / "summary.json", summary)
    write_run_info(out, kind="consistency", config=run_config)
    result = ConsistencyResult(out=out, summary=summary, n_calls=len(frame), n_failed=len(failures),
                               n_sent=n_sent, n_cached=n_cached, notes=notes,
                               elapsed_s=time.monotonic() - start)
    if console is not None:
        print_summary(result, console)
    return result


_IMAGE_KEYS = ["_prompt", "_sampling", "_image"]


def build_summary(frame: pd.DataFrame, *, prompts: list[str], samplings: list[Sampling], repeats: int,
                  n_failed: int = 0, tie_break: Literal["hgg", "lgg"] = "hgg") -> dict[str, Any]:
    """``summary.json`` from the answer rows (``consistency.csv`` plus the private ``_prompt``,
    ``_sampling``, ``_image`` index columns). See :func:`run_consistency` for the keys."""
    overall, groups = _group_summary(frame, _IMAGE_KEYS, tie_break)
    summary: dict[str, Any] = {**overall, "repeats": repeats, "n_failed": n_failed, "tie_break": tie_break,
                               "prompts": prompts, "sampling": [s.model_dump(mode="json") for s in samplings]}
    per_image = []
    for row, choices in groups:
        s = summarize_answers(choices, label=row["label"], tie_break=tie_break)
        per_image.append({"patient_id": str(row["patient_id"]), "orientation": str(row["orientation"]),
                          "slice_index": int(row["slice_index"]), "prompt": prompts[int(row["_prompt"])],
                          "temperature": samplings[int(row["_sampling"])].temperature, **s})
    summary["per_image"] = per_image
    if len(prompts) > 1:
        summary["per_prompt"] = []
        for i, name in enumerate(prompts):
            sub, _ = _group_summary(frame[frame["_prompt"] == i], _IMAGE_KEYS, tie_break)
            summary["per_prompt"].append({"prompt": name, **sub})
        summary["prompt_robustness"] = prompt_robustness(per_image)
    if len(samplings) > 1:
        summary["per_temperature"] = []
        for i, s in enumerate(samplings):
            sub, _ = _group_summary(frame[frame["_sampling"] == i], _IMAGE_KEYS, tie_break)
            summary["per_temperature"].append({"temperature": s.temperature, "top_p": s.top_p, **sub})
    return summary


def prompt_robustness(per_image: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Does the majority answer of an image survive a paraphrase of the prompt? Over images (patient,
    orientation, slice, temperature) asked with two or more prompts: ``n_images``,
    ``same_majority_share`` (share of images whose majority answer is the same under every prompt) and
    ``mean_majority_agreement`` (mean over images of the share of prompts giving the most common
    majority).

    >>> rows = [{"patient_id": "A", "orientation": "axial", "slice_index": 1, "temperature": None,
    ...          "prompt": p, "majority": m} for p, m in (("seed", "1"), ("alt", "1"))]
    >>> rows += [{"patient_id": "B", "orientation": "axial", "slice_index": 1, "temperature": None,
    ...           "prompt": p, "majority": m} for p, m in (("seed", "1"), ("alt", "0"))]
    >>> prompt_robustness(rows)
    {'n_images': 2, 'same_majority_share': 0.5, 'mean_majority_agreement': 0.75}
    """
    by_image: dict[tuple, list[str | None]] = {}
    for r in per_image:
        key = (r["patient_id"], r["orientation"], r["slice_index"], r["temperature"])
        by_image.setdefault(key, []).append(r["majority"])
    multi = [m for m in by_image.values() if len(m) > 1]
    shares = [max(m.count(v) for v in m) / len(m) for m in multi]
    return {"n_images": len(multi),
            "same_majority_share": _mean(float(len(set(m)) == 1) for m in multi),
            "mean_majority_agreement": _mean(shares)}


def print_summary(result: ConsistencyResult, console: Any) -> None:
    """A rich table per image (first 40) and the overall line."""
    from rich.table import Table

    def fmt(x: Any, digits: int = 3) -> str:
        return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)

    s = result.summary
    names = {"0": "LGG", "1": "HGG", "2": "no glioma", "unparsed": "unparsed", None: "-"}
    short = {**names, "2": "NG"}
    many_prompts, many_t = len(s["prompts"]) > 1, len(s["sampling"]) > 1
    table = Table(title=f"consistency: {result.out}")
    columns = ["patient", "slice", "truth", *(["prompt"] if many_prompts else []), *(["T"] if many_t else []),
               "n", "LGG", "HGG", "NG", "unp.", "majority", "agree", "H bits", "flips"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("patient", "prompt", "majority") else "right")
    for r in s["per_image"][:40]:
        c = r["counts"]
        cells = [r["patient_id"], f"{r['orientation'][:3]} {r['slice_index']}",
                 "-" if r["label"] is None else ("HGG" if r["label"] else "LGG")]
        cells += [Path(r["prompt"]).name] if many_prompts else []
        cells += [_fmt_t(r["temperature"])] if many_t else []
        cells += [str(r["n"]), str(c["0"]), str(c["1"]), str(c["2"]), str(c["unparsed"]),
                  short[r["majority"]] + ("*" if r["tie"] else ""), fmt(r["agreement"], 2),
                  fmt(r["entropy"], 2), fmt(r["flip_rate"], 2)]
        table.add_row(*cells)
    console.print(table)
    if len(s["per_image"]) > 40:
        console.print(f"... {len(s['per_image']) - 40} more images in {result.out / 'summary.json'}")
    if any(r["tie"] for r in s["per_image"]):
        console.print(f"* tie between the most frequent answers, broken to {s['tie_break'].upper()}")
    c = s["counts"]
    console.print(f"{s['n']} answers over {s['n_images']} image(s): LGG {c['0']}, HGG {c['1']}, "
                  f"no glioma {c['2']}, unparsed {c['unparsed']}; majority {names[s['majority']]}, "
                  f"agreement {fmt(s['agreement'])}, "
                  f"entropy {fmt(s['entropy'])} bits, flip rate {fmt(s['flip_rate'])}, Fleiss' kappa "
                  f"{fmt(s['fleiss_kappa'])}, consensus accuracy {fmt(s['consensus_accuracy'])}, expected "
                  f"accuracy {fmt(s['expected_accuracy'])}")
    console.print(f"calls {result.n_calls} (sent {result.n_sent}, from cache {result.n_cached}), failed "
                  f"{result.n_failed}, {result.elapsed_s:.1f} s")
    for note in result.notes:
        console.print(f"note: {note}")


# ============================================================================================== figures
_ANSWER_COLOURS = {"0": "#0072B2", "1": "#D55E00", "2": "#009E73", "unparsed": "#9ca3af"}
_ANSWER_NAMES = {"0": "LGG (0)", "1": "HGG (1)", "2": "no glioma (2)", "unparsed": "unparsed"}


def _per_image_frame(per_image: Sequence[Mapping[str, Any]] | pd.DataFrame | Mapping[str, Any]
                     ) -> pd.DataFrame:
    import pandas as pd

    if isinstance(per_image, Mapping):  # a whole summary.json
        if "per_image" not in per_image:
            raise DataError("summary.json has no 'per_image' list (written by an older medvlm?)")
        per_image = per_image["per_image"]
    df = pd.DataFrame(list(per_image)) if not isinstance(per_image, pd.DataFrame) else per_image.copy()
    if "counts" not in df.columns:
        raise DataError("per_image entries need 'counts' ({'0','1','2','unparsed'})")
    for k in CATEGORIES:
        df[f"n_{k}"] = [int((c or {}).get(k, 0)) for c in df["counts"]]
    return df


def agreement_figure(per_image: Sequence[Mapping[str, Any]] | pd.DataFrame | Mapping[str, Any], *,
                     title: str = "Answers per image over repeats") -> Figure:
    """Answer shares per image across a cohort: one stacked bar per image (LGG, HGG, no glioma,
    unparsed shares of its N repeats), images ordered by true label (LGG first) then by HGG share; a
    marker above each bar says whether the majority answer is right (green o) or wrong (red x).

    For the study's pair (one HGG and one LGG image) it is the answer distribution per image; for a
    cohort, agreement across it. Args: ``summary.json``'s ``per_image`` list (or the whole summary, or a
    DataFrame of it); entries of several prompts/temperatures are labelled with them.
    """
    import numpy as np
    from matplotlib.figure import Figure

    df = _per_image_frame(per_image)
    df["_n"] = df[[f"n_{k}" for k in CATEGORIES]].sum(axis=1).clip(lower=1)
    df["_hgg"] = df["n_1"] / df["_n"]
    labels = df["label"] if "label" in df.columns else [None] * len(df)
    df["_lab"] = [2 if _label(v) is None else _label(v) for v in labels]  # unknown truth last
    df = df.sort_values(["_lab", "_hgg"], kind="stable").reset_index(drop=True)
    many_prompts = "prompt" in df.columns and df["prompt"].nunique() > 1
    many_t = "temperature" in df.columns and df["temperature"].astype(str).nunique() > 1

    def name(r: Any) -> str:
        parts = [str(r.get("patient_id", "?"))]
        if "slice_index" in r:
            parts[0] += f":{r['slice_index']}"
        if many_prompts:
            parts.append(Path(str(r["prompt"])).name)
        if many_t:
            parts.append(f"T={_fmt_t(r['temperature'])}")
        return " ".join(parts)

    width = min(max(5.0, 0.28 * len(df) + 3.0), 18.0)
    fig = Figure(figsize=(width, 4.4), dpi=100, layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(df))
    bottom = np.zeros(len(df))
    for k in CATEGORIES:
        share = (df[f"n_{k}"] / df["_n"]).to_numpy(dtype=float)
        ax.bar(x, share, bottom=bottom, color=_ANSWER_COLOURS[k], width=0.8, label=_ANSWER_NAMES[k])
        bottom += share
    right = df["consensus_correct"] if "consensus_correct" in df.columns else [None] * len(df)
    marks = [(xi, bool(ok)) for xi, ok in zip(x, right, strict=True)
             if not (ok is None or (isinstance(ok, float) and math.isnan(ok)))]
    for ok, marker, colour, text in ((True, "o", "#009E73", "majority right"),
                                     (False, "x", "#D55E00", "majority wrong")):
        xs = [xi for xi, good in marks if good is ok]
        if xs:
            ax.scatter(xs, [1.04] * len(xs), marker=marker, color=colour, s=30, zorder=3, clip_on=False,
                       label=f"{text} ({len(xs)})")
    n_lgg = int((df["_lab"] == 0).sum())
    if 0 < n_lgg < len(df):
        ax.axvline(n_lgg - 0.5, color="#374151", linewidth=1)
    for lab, text in ((0, "true LGG"), (1, "true HGG")):
        idx = np.flatnonzero(df["_lab"].to_numpy() == lab)
        if idx.size:
            ax.text(idx.mean(), 1.1, f"{text} (n = {idx.size})", ha="center", fontsize=8, color="#111827")
    ax.axhline(0.5, color="#374151", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1.16)
    ax.set_xlim(-0.6, max(len(df), 1) - 0.4)
    ax.set_ylabel("share of the repeats")
    if len(df) <= 60:
        ax.set_xticks(x, [name(r) for r in df.to_dict("records")], rotation=90 if len(df) > 4 else 0,
                      fontsize=7)
    else:
        ax.set_xticks([])
    agreement_mean = df["agreement"].mean() if "agreement" in df.columns and len(df) else float("nan")
    ax.set_title(f"{title} ({len(df)} image(s), mean agreement {agreement_mean:.2f})")
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def temperature_figure(per_temperature: Sequence[Mapping[str, Any]] | Mapping[str, Any], *,
                       title: str = "Temperature sweep") -> Figure:
    """Agreement, flip rate, entropy (bits, right axis) and consensus/expected accuracy against the
    sampling temperature, from ``summary.json``'s ``per_temperature`` list (or the whole summary; a
    server-default temperature is left out)."""
    from matplotlib.figure import Figure

    if isinstance(per_temperature, Mapping):
        if "per_temperature" not in per_temperature:
            raise DataError("summary.json has no 'per_temperature' list (the run had one temperature)")
        per_temperature = per_temperature["per_temperature"]
    rows = sorted((r for r in per_temperature if r.get("temperature") is not None),
                  key=lambda r: float(r["temperature"]))
    fig = Figure(figsize=(6.4, 4.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    t = [float(r["temperature"]) for r in rows]
    styles = (("mean_agreement", "mean agreement", "#0072B2", "-o"),
              ("flip_rate", "flip rate", "#E69F00", "-s"),
              ("consensus_accuracy", "consensus accuracy", "#009E73", "--^"),
              ("expected_accuracy", "expected accuracy", "#CC79A7", "--v"))
    for key, label, colour, style in styles:
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            ax.plot(t, [float("nan") if v is None else v for v in values], style, color=colour, label=label)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("sampling temperature")
    ax.set_ylabel("share")
    ax2 = ax.twinx()
    ax2.plot(t, [float("nan") if r.get("mean_entropy") is None else r["mean_entropy"] for r in rows], ":d",
             color="#6b7280", label="mean entropy (bits, right)")
    ax2.set_ylim(0, 2.05)
    ax2.set_ylabel("entropy (bits)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, frameon=False, loc="best")
    ax.set_title(title)
    ax.spines[["top"]].set_visible(False)
    return fig
