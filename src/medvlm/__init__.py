"""medvlm: does a general vision-language model suffice, does it need fine-tuning, and how do both
compare with a plain CNN? Reproducible studies on medical imaging, starting with BraTS 2020 glioma
grading (labels everywhere: LGG = 0, HGG = 1; VLM answers: 0 LGG, 1 HGG, 2 no glioma).

The pipeline, as the package tree reads: ``data`` -> ``cnn`` / ``vlm`` -> ``aggregate`` -> ``metrics``
-> ``report``. Heavy libraries (torch, transformers) are imported only inside the functions that need
them.
"""

from medvlm.errors import BackendError, ConfigError, DataError, MedVLMError

__version__ = "0.1.0"
LABELS = {"LGG": 0, "HGG": 1}

__all__ = ["BackendError", "ConfigError", "DataError", "MedVLMError", "LABELS", "__version__"]
