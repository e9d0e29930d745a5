"""medvlm: does a general vision-language model suffice, does it need fine-tuning, and how do both
compare with a plain CNN? Reproducible studies on medical imaging tasks (``medvlm.tasks``: the study,
BraTS 2020 glioma grading, and a tumour-slice control on the same data); each task names its classes,
labels and answer codes.

The pipeline, as the package tree reads: ``tasks`` -> ``data`` -> ``cnn`` / ``vlm`` -> ``aggregate`` ->
``predictions`` / ``metrics`` -> ``report``. Heavy libraries (torch, transformers) are imported only
inside the functions that need them.
"""

from medvlm.errors import BackendError, ConfigError, DataError, MedVLMError

__version__ = "0.1.0"

__all__ = ["BackendError", "ConfigError", "DataError", "MedVLMError", "__version__"]
