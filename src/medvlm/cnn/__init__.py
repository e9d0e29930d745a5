"""The CNN baseline: models (:mod:`.models`), volume datasets (:mod:`.data`), options (:mod:`.config`),
training (:mod:`.train`, built on :mod:`.loop`, :mod:`.checkpoints`, :mod:`.folds`, :mod:`.distributed`).

Nothing here imports torch at package import; use ``from medvlm.cnn.train import train_cnn, make_config``
(``CNNConfig`` and ``make_config`` are defined in :mod:`.config`; :mod:`.train` re-exports them).
"""

from __future__ import annotations

__all__ = ["models", "data", "train"]
