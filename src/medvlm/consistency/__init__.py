"""Consistency and robustness of a VLM's answer: the same image and prompt, asked N times.

The study asked Llama-3.2-Vision about one high-grade and one low-grade glioma image 95 times each:
95/95 "high grade" for the first, 77/95 for the second. :func:`run_consistency` makes that a repeatable
measurement, for any task, and widens it:

- one slice of one patient (the study; ``--patient``), or one slice per patient of a cohort (default
  the central tumour slice of each);
- prompt-paraphrase robustness (several prompts) and a temperature sweep (several temperatures);
- sampling settings explicit and recorded (temperature, top-p, seed per repeat), defaulting to the
  model's own generation defaults (:func:`resolve_sampling`).

Requests go through :func:`medvlm.vlm.engine.ask_images` and its response cache, keyed by the repeat
index: rerunning sends nothing, raising ``--repeats`` sends only the new repeats.

Answer categories: the work folder's task's answer codes (``"0"``, ``"1"``, ...) and ``"unparsed"`` (an
answer that could not be read is a category of its own, never a guess). Truth labels as the task
defines them; a tie between the top answers goes to the ``tie_break`` class (default the positive one).

Modules (their public names are re-exported here):

- :mod:`medvlm.consistency.stats` -- pure summary functions (doctested): :func:`count_answers`,
  :func:`majority_answer`, :func:`agreement`, :func:`entropy_bits`, :func:`flip_rate`,
  :func:`expected_accuracy`, :func:`fleiss_kappa`, :func:`summarize_answers` (one image),
  :func:`summarize_images` (several), :func:`prompt_robustness`;
- :mod:`medvlm.consistency.config` -- :class:`ConsistencyConfig`, :class:`Sampling`,
  :func:`resolve_sampling`, :func:`decoding_for`;
- :mod:`medvlm.consistency.images` -- :func:`select_images`, :func:`central_tumour_slice`;
- :mod:`medvlm.consistency.summary` -- :func:`build_summary` (``summary.json``);
- :mod:`medvlm.consistency.run` -- :func:`run_consistency`, :func:`print_summary`;
- :mod:`medvlm.consistency.figures` -- figures for the report: :func:`agreement_figure` (answer shares
  per image across a cohort; also the study's pair of one image per class) and :func:`temperature_figure` (a
  temperature sweep).

Importing this package imports neither pandas nor matplotlib nor torch: they are imported inside the
functions that need them.
"""

from medvlm.consistency.config import (
    ConsistencyConfig,
    Sampling,
    Temperature,
    decoding_for,
    model_generation_defaults,
    resolve_sampling,
)
from medvlm.consistency.figures import agreement_figure, temperature_figure
from medvlm.consistency.images import ConsistencyImage, central_tumour_slice, select_images
from medvlm.consistency.run import (
    EXTRA_COLUMNS,
    FAILURE_COLUMNS,
    ConsistencyResult,
    csv_columns,
    print_summary,
    run_consistency,
)
from medvlm.consistency.stats import (
    CATEGORIES,
    agreement,
    category,
    count_answers,
    entropy_bits,
    expected_accuracy,
    fleiss_kappa,
    flip_rate,
    flips,
    is_tie,
    majority_answer,
    prompt_robustness,
    summarize_answers,
    summarize_images,
)
from medvlm.consistency.summary import build_summary

__all__ = [
    "CATEGORIES",
    "EXTRA_COLUMNS",
    "csv_columns",
    "FAILURE_COLUMNS",
    "ConsistencyConfig",
    "ConsistencyImage",
    "ConsistencyResult",
    "Sampling",
    "Temperature",
    "agreement",
    "agreement_figure",
    "build_summary",
    "category",
    "central_tumour_slice",
    "count_answers",
    "decoding_for",
    "entropy_bits",
    "expected_accuracy",
    "fleiss_kappa",
    "flip_rate",
    "flips",
    "is_tie",
    "majority_answer",
    "model_generation_defaults",
    "print_summary",
    "prompt_robustness",
    "resolve_sampling",
    "run_consistency",
    "select_images",
    "summarize_answers",
    "summarize_images",
    "temperature_figure",
]
