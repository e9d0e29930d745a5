"""Fine-tuning a VLM (LoRA / QLoRA) on the split's training cohort: ``medvlm finetune``.

Public API: :class:`FinetuneConfig`, :func:`finetune` (library form of the command),
:func:`merge_adapter`. The adapter written by :func:`finetune` goes to ``eval-vlm --adapter``.
"""

from medvlm.finetune.config import FinetuneConfig
from medvlm.finetune.merge import merge_adapter
from medvlm.finetune.train import finetune

__all__ = ["FinetuneConfig", "finetune", "merge_adapter"]
