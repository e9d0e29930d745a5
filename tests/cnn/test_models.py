"""Model registry and shapes: each network maps (B, 4, D, H, W) to logits (B, 1)."""

from __future__ import annotations

import pytest
import torch

from medvlm.cnn.models import MODELS, build_model, check_input_shape, count_parameters, model_names
from medvlm.errors import ConfigError


def test_names() -> None:
    assert model_names() == ["densenet121", "densenet2d", "resnet18", "resnet2d", "small3d"]
    assert "small3d" in MODELS


@pytest.mark.parametrize(("name", "shape"), [
    ("small3d", (4, 16, 24, 24)),
    ("resnet18", (4, 16, 24, 24)),
    ("densenet121", (4, 32, 32, 32)),
])
def test_output_shape(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 1)
    assert out.dtype == torch.float32


def test_small3d_is_the_study_network() -> None:
    model = build_model("small3d", (4, 16, 24, 24))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (4, 8, (3, 3, 3), (1, 1, 1), (1, 1, 1)), (8, 16, (3, 3, 3), (1, 1, 1), (1, 1, 1))]
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool3d)]
    assert [p.kernel_size for p in pools] == [2, 2]
    fcs = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    # 16 channels x (16/4) x (24/4) x (24/4)
    assert [(f.in_features, f.out_features) for f in fcs] == [(16 * 4 * 6 * 6, 128), (128, 1)]
    assert [type(m).__name__ for m in model.features] == ["Conv3d", "ReLU", "MaxPool3d"] * 2
    assert [type(m).__name__ for m in model.classifier] == ["Flatten", "Linear", "ReLU", "Linear"]


def test_small3d_full_size_parameter_count() -> None:
    # 4x95x128x128 -> 16 x 23 x 32 x 32 into the first FC layer: the 48M parameters of NOTES.md
    with torch.device("meta"):
        model = MODELS.get("small3d")((4, 95, 128, 128))
    expected = (4 * 8 * 27 + 8) + (8 * 16 * 27 + 16) + (16 * 23 * 32 * 32 * 128 + 128) + (128 + 1)
    assert count_parameters(model) == expected == 48_239_097


def test_odd_shape_uses_floor() -> None:
    model = build_model("small3d", (4, 9, 10, 11))
    assert model.classifier[1].in_features == 16 * 2 * 2 * 2
    assert model(torch.randn(1, 4, 9, 10, 11)).shape == (1, 1)


def test_unknown_model_lists_names_and_suggests() -> None:
    listed = r"\['densenet121', 'densenet2d', 'resnet18', 'resnet2d', 'small3d'\]"
    with pytest.raises(ConfigError, match=listed + ".*Did you mean 'small3d'"):
        build_model("smal3d", (4, 16, 24, 24))


@pytest.mark.parametrize(("name", "shape"), [("densenet121", (4, 16, 24, 24)), ("small3d", (4, 3, 3, 3)),
                                             ("small3d", (4, 16, 24))])
def test_too_small_or_bad_shape(name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match=name):
        check_input_shape(name, shape)
