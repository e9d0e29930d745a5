"""The section of a fine-tuning run (finetune_config.json, train_log.csv): settings, loss curve and the
validation metrics per epoch. The VLM section shows the same settings for a run with an adapter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medvlm.report.format import _safe_figure, fmt
from medvlm.report.runs import RunData, _finetune_config, _read_csv


def _finetune_facts(ft: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Method, rank, epochs, steps and the selected epoch of a fine-tuning (from finetune_config.json)."""
    if not ft:
        return []
    hp = ft.get("hyperparameters") if isinstance(ft.get("hyperparameters"), Mapping) else {}
    out = [("method", str(ft.get("method") or hp.get("method") or "–"))]
    if hp.get("rank") is not None:
        out.append(("LoRA rank / alpha", f"{hp.get('rank')} / {fmt(hp.get('alpha'), 1)}"))
    epochs = hp.get("epochs")
    if epochs is not None or hp.get("max_steps") is not None:
        out.append(
            ("epochs", fmt(epochs) + (f" (max_steps {hp['max_steps']})" if hp.get("max_steps") else ""))
        )
    if ft.get("steps") is not None:
        out.append(("steps trained", fmt(ft["steps"])))
    if ft.get("selected_epoch") is not None:
        how = f"{ft.get('select', '')} by {ft.get('select_metric', '')}".strip() if ft.get("select") else ""
        out.append(("selected epoch", fmt(ft["selected_epoch"]) + (f" ({how})" if how else "")))
    if ft.get("base_model"):
        out.append(("base model", str(ft["base_model"])))
    if ft.get("n_train") is not None:
        out.append(("training examples", f"{fmt(ft['n_train'])} (validation {fmt(ft.get('n_val'))})"))
    return out


def _validation_table(log: Any, selected: int | None) -> dict[str, Any] | None:
    """Validation metrics per epoch end (rows of train_log.csv with val_* values); selected row marked."""
    import pandas as pd

    vcols = [c for c in log.columns if str(c).startswith("val_") and log[c].notna().any()]
    if not vcols or "epoch" not in log.columns:
        return None
    rows = []
    for _, r in log[log[vcols].notna().any(axis=1)].iterrows():
        ep = int(r["epoch"]) if pd.notna(r["epoch"]) else None
        mark = "selected" if selected is not None and ep == selected else ("base model" if ep == 0 else "")
        cells = [fmt(ep), *(fmt(float(r[c])) if pd.notna(r[c]) else "–" for c in vcols)]
        cells.append({"v": mark, "cls": "good"} if mark == "selected" else mark)
        rows.append(cells)
    return {
        "title": "Validation per epoch (train_log.csv)",
        "columns": ["epoch", *vcols, ""],
        "rows": rows,
        "left": set(),
        "note": "",
    }


def details(run: RunData, d: dict[str, Any]) -> None:
    """Fine-tuning settings, the loss curve and the validation table of ``train_log.csv``."""
    import pandas as pd

    from medvlm.report import figures as F

    facts = d["facts"]
    ft = _finetune_config(run.path, run)
    selected = ft.get("selected_epoch") if isinstance(ft.get("selected_epoch"), int) else None
    facts.extend(_finetune_facts(ft))
    log = _read_csv(run, "train_log.csv")
    if log is not None:
        fig = _safe_figure(
            run,
            "train_log.csv",
            lambda: (
                F.loss_curve_figure(log, title=run.name, selected_epoch=selected),
                f"Fine-tuning of {run.name} (train_log.csv): training loss per optimizer step and the "
                "validation metrics at each epoch end (epoch 0 = the base model)"
                + (
                    f"; the dashed line marks the selected epoch {selected}." if selected is not None else "."
                ),
            ),
        )
        if fig:
            d["figures"].append(fig)
        if "loss" in log.columns and log["loss"].notna().any():
            facts.append(
                (
                    "optimizer steps",
                    fmt(int(pd.to_numeric(log["step"], errors="coerce").max()))
                    if "step" in log.columns
                    else "–",
                )
            )
            facts.append(("final training loss", fmt(float(log["loss"].dropna().iloc[-1]))))
        t = _validation_table(log, selected)
        if t:
            d["tables"].append(t)
