"""The CNN baseline: models (:mod:`.models`), volume datasets (:mod:`.data`), training (:mod:`.train`).

Nothing here imports torch at package import; use ``from medvlm.cnn.train import train_cnn, make_config``.
"""

from __future__ import annotations

__all__ = ["models", "data", "train"]
