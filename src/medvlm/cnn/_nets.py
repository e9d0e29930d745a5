"""The networks behind :mod:`medvlm.cnn.models` (torch code; imported only when a model is built).

Every 3D factory takes ``input_shape = (4, D, H, W)`` (the prepared channels; D, H, W = z, y, x), every
2D one ``(4, H, W)``,
and returns an ``nn.Module`` mapping a batch ``(B, 4, D, H, W)`` float32 to logits ``(B, 1)``;
``sigmoid(logit)`` is P(label 1), the positive class. ``n_outputs`` K > 1 (a K-class task): logits
``(B, K)``, ``softmax`` gives the class probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Small3DCNN(nn.Module):
    """The study's 3D CNN (arXiv:2509.10683), layer for layer.

    ``conv3d 4->8 (k3, s1, p1) -> ReLU -> maxpool 2 -> conv3d 8->16 (k3, s1, p1) -> ReLU -> maxpool 2
    -> flatten -> FC -> 128 -> ReLU -> FC -> 1`` (a logit; sigmoid gives P(label 1)). The first FC layer's
    input size is ``16 * (D//2//2) * (H//2//2) * (W//2//2)``, derived from ``input_shape``: at
    4x95x128x128 that is 376,832 inputs and the network has 48.2M parameters.
    """

    def __init__(self, input_shape: Sequence[int], n_outputs: int = 1) -> None:
        super().__init__()
        channels, *spatial = (int(v) for v in input_shape)
        self.input_shape = (channels, *spatial)
        self.features = nn.Sequential(
            nn.Conv3d(channels, 8, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
            nn.MaxPool3d(2),
            nn.Conv3d(8, 16, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
            nn.MaxPool3d(2),
        )
        reduced = [s // 2 // 2 for s in spatial]
        if len(spatial) != 3 or min(reduced) < 1:
            raise ValueError(f"small3d needs a (C, D, H, W) input with D, H, W >= 4, got {self.input_shape}")
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * reduced[0] * reduced[1] * reduced[2], 128),
            nn.ReLU(),
            nn.Linear(128, n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, 4, D, H, W) -> logits (B, 1)."""
        return self.classifier(self.features(x))


def small3d(input_shape: Sequence[int], n_outputs: int = 1) -> nn.Module:
    """The study's network (see :class:`Small3DCNN`); needs D, H, W >= 4."""
    return Small3DCNN(input_shape, n_outputs)


def densenet121(input_shape: Sequence[int], n_outputs: int = 1) -> nn.Module:
    """MONAI ``DenseNet121(spatial_dims=3, in_channels=4, out_channels=1)`` (11.3M parameters).

    Downsamples 32-fold: needs D, H, W >= 32.
    """
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=3, in_channels=int(input_shape[0]), out_channels=n_outputs)


def resnet18(input_shape: Sequence[int], n_outputs: int = 1) -> nn.Module:
    """MONAI 3D ResNet-18 (basic blocks [2, 2, 2, 2], widths 64-512) with 4 input channels, 1 logit."""
    from monai.networks.nets import resnet18 as monai_resnet18

    return monai_resnet18(spatial_dims=3, n_input_channels=int(input_shape[0]), num_classes=n_outputs)


def densenet2d(input_shape: Sequence[int], n_outputs: int = 1) -> nn.Module:
    """MONAI ``DenseNet121(spatial_dims=2, in_channels=4, out_channels=1)``: the 2D network of slice-level
    tasks; ``input_shape`` = (4, H, W), H and W >= 32."""
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=2, in_channels=int(input_shape[0]), out_channels=n_outputs)


def resnet2d(input_shape: Sequence[int], n_outputs: int = 1) -> nn.Module:
    """MONAI 2D ResNet-18 (``spatial_dims=2``), 4 input channels, 1 logit; ``input_shape`` = (4, H, W)."""
    from monai.networks.nets import resnet18 as monai_resnet18

    return monai_resnet18(spatial_dims=2, n_input_channels=int(input_shape[0]), num_classes=n_outputs)
