"""The run folder around the CNN training: what is checked before anything is written
(:func:`preflight`), what ``run.json`` records (:func:`run_config`), ``history.csv``
(:func:`write_history`) and ``learning_curve.png`` (:func:`learning_curve`).

The files themselves are described in :mod:`medvlm.cnn.train`; checkpoints in
:mod:`medvlm.cnn.checkpoints`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm._io import atomic_path, write_text_atomic
from medvlm.cnn.checkpoints import check_checkpoint_paths, check_same_options
from medvlm.cnn.config import CNNConfig
from medvlm.cnn.folds import fold_cohorts
from medvlm.cnn.progress import _Reporter
from medvlm.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Columns of ``history.csv``.
HISTORY_COLUMNS = ("fold", "epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy", "val_auc",
                   "val_balanced_accuracy", "val_f1", "val_mcc", "lr", "seconds")


def input_shape_of(work: Path, cohorts: dict[str, Any]) -> tuple[int, ...]:
    """The one input shape of every cohort's items (volumes or slices; DataError naming the file)."""
    from medvlm.cnn.data import input_shape

    shapes = {input_shape(work, c) for c in cohorts.values()}
    if len(shapes) != 1:
        raise DataError(f"{work}: the cohorts' volumes differ in shape {sorted(shapes)}; prepare again")
    return shapes.pop()


def preflight(work: Path, run: Path, folds: list[int], config: CNNConfig, n_outputs: int = 1) -> None:
    """Fail before anything is written: cohorts, volumes, model (with ``n_outputs`` logits) vs input
    shape, options vs ``run.json``."""
    from medvlm.cnn.models import check_input_shape
    from medvlm.runinfo import read_run_info

    for fold in folds:
        check_input_shape(config.model, input_shape_of(work, fold_cohorts(work, fold)),  # type: ignore[arg-type]
                          n_outputs)
    info = read_run_info(run) if (run / "run.json").is_file() else None
    saved = (info or {}).get("config") or {}
    if info and info.get("kind") != "cnn":
        raise ConfigError(f"{run / 'run.json'}: this folder holds a {info.get('kind')!r} run, not a CNN run; "
                          "use another --out")
    check_same_options(run, saved, config)
    check_checkpoint_paths(run, folds)


def run_config(config: CNNConfig, work: Path, folds: list[int], task: Any, **resolved: Any) -> dict[str, Any]:
    """``run.json``'s ``config``: the options, the work folder, the folds and what was resolved
    (device, workers, world size); a task with K > 2 classes also its description (``task``), so
    ``medvlm metrics`` and the report read the per-class probability columns by the task's names."""
    record = {**config.model_dump(), "work": str(work.resolve()), "folds": folds, **resolved}
    if task.n_classes > 2:
        record["task"] = task.describe()
    return record


def write_history(run: Path, histories: dict[int, list[dict[str, Any]]]) -> pd.DataFrame:
    """``RUN/history.csv``: the rows of every fold, in fold order (:data:`HISTORY_COLUMNS`)."""
    import pandas as pd

    rows = [row for fold in sorted(histories) for row in histories[fold]]
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    write_text_atomic(run / "history.csv", frame.to_csv(index=False))
    return frame


def learning_curve(run: Path, history: pd.DataFrame, reporter: _Reporter) -> Path | None:
    """``RUN/learning_curve.png`` via ``medvlm.report.figures.learning_curve_figure`` when it exists.

    A missing or failing figure function never fails a finished training; it is reported on stderr.
    """
    path = run / "learning_curve.png"
    try:
        from medvlm.report.figures import learning_curve_figure

        figure = learning_curve_figure(history)
        if isinstance(figure, bytes | bytearray):
            with atomic_path(path) as tmp:
                tmp.write_bytes(figure)
        elif isinstance(figure, str | Path):
            return Path(figure)
        else:
            with atomic_path(path) as tmp:
                figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
            with contextlib.suppress(Exception):
                import matplotlib.pyplot as plt

                plt.close(figure)
    except Exception as exc:  # noqa: BLE001 - the figure is optional
        reporter.line(f"[yellow]warning:[/] no learning-curve figure ({type(exc).__name__}: {exc})")
        return None
    return path
