"""The figures of medvlm.consistency.figures: answer shares per image, the temperature sweep."""

from __future__ import annotations

import pytest

from medvlm.consistency.figures import agreement_figure, temperature_figure
from medvlm.consistency.stats import CATEGORIES, summarize_answers, summarize_images
from medvlm.errors import DataError


def test_figures():
    from matplotlib.figure import Figure

    from medvlm.report.figures import figure_to_png

    per_image = [dict(patient_id=p, orientation="axial", slice_index=4, prompt="seed", temperature=0.7,
                      **summarize_answers(c, label=lab))
                 for p, c, lab in (("HGG-1", [1] * 95, 1), ("LGG-1", [1] * 77 + [0] * 18, 0))]
    fig = agreement_figure({"per_image": per_image})
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * len(CATEGORIES)  # one stacked bar of four shares per image
    assert [t.get_text() for t in ax.get_xticklabels()] == ["LGG-1:4", "HGG-1:4"]  # LGG first
    assert figure_to_png(fig).startswith(b"\x89PNG")
    sweep = [{"temperature": t, **summarize_images([([1] * 5 + [0] * k, 1)])}
             for t, k in ((0.0, 0), (1.0, 3))]
    fig2 = temperature_figure({"per_temperature": sweep})
    assert figure_to_png(fig2).startswith(b"\x89PNG")
    with pytest.raises(DataError, match="per_temperature"):
        temperature_figure({"n": 3})
