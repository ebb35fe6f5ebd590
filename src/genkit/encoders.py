"""Built-in encoders for fixed-size inputs: ``mlp`` (any shape, flattened), ``conv`` (images,
spectrograms) and ``conv1d`` (waveforms)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from genkit.parts import Encoder, make_activation
from genkit.registry import register_encoder
from genkit.spec import DataSpec


def mlp(sizes: list[int], act: str) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]``, each followed by the activation."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(n_in, n_out), make_activation(act)]
    return nn.Sequential(*layers)


@register_encoder("mlp")
class MLPEncoder(Encoder):
    """Flatten, then dense layers: ``x: [B, *event_shape] -> [B, hidden[-1]]``.

    Args:
        hidden: widths of the dense layers (the seed Keras model uses [128, 64]).
        activation: activation by name (relu, gelu, silu, elu, leaky_relu, tanh).
    """

    modalities = frozenset({"image", "audio"})

    def __init__(self, spec: DataSpec, *, hidden: list[int] = [256, 128], activation: str = "relu") -> None:  # noqa: B006
        super().__init__()
        self.net = mlp([spec.numel, *hidden], activation)
        self.out_features = hidden[-1] if hidden else spec.numel

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.net(x.flatten(1))


def shape_mismatch(spec: DataSpec, dims: int, needs: str) -> str | None:
    """Why a part that ``needs`` examples of ``dims`` dimensions cannot serve ``spec``, or None."""
    return None if len(spec.event_shape) == dims else f"{needs}, but the data is {spec.describe()}"


def halvings(size: int, times: int) -> int:
    """Spatial size after ``times`` stride-2 convolutions (kernel 3, padding 1): ceil each time."""
    for _ in range(times):
        size = (size + 1) // 2
    return size


@register_encoder("conv")
class ConvEncoder(Encoder):
    """Strided 3x3 convolutions, then a dense layer: ``x: [B, C, H, W] -> [B, hidden]``.

    Each convolution halves height and width (rounding up), so 1x8x8, 1x28x28 and
    3x32x32 inputs all work with the same settings.

    Args:
        channels: output channels of each stride-2 convolution.
        hidden: width of the dense layer after flattening (0: no dense layer).
        activation: activation by name.
    """

    modalities = frozenset({"image", "audio"})

    @classmethod
    def incompatibility(cls, spec: DataSpec) -> str | None:
        return super().incompatibility(spec) or shape_mismatch(spec, 3, "needs [C, H, W] inputs")

    def __init__(
        self,
        spec: DataSpec,
        *,
        channels: list[int] = [32, 64],  # noqa: B006
        hidden: int = 256,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        c, h, w = spec.event_shape
        layers: list[nn.Module] = []
        for c_in, c_out in zip([c, *channels], channels):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1), make_activation(activation)]
        flat = (channels[-1] if channels else c) * halvings(h, len(channels)) * halvings(w, len(channels))
        self.net = nn.Sequential(*layers, *dense_head(flat, hidden, activation))
        self.out_features = hidden or flat

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.net(x)


def dense_head(flat: int, hidden: int, activation: str) -> list[nn.Module]:
    """The end of a conv encoder: flatten ``flat`` features, then a dense layer of ``hidden`` units (0: none)."""
    return [nn.Flatten(), *([nn.Linear(flat, hidden), make_activation(activation)] if hidden else [])]


def layer_strides(who: str, strides: list[int], length: int, layers: int, final_length: int) -> list[int]:
    """The strides of ``who`` (``encoder``/``decoder``): as given, one per layer, or, when none are
    given, equal strides (at least 2) taking ``length`` to about ``final_length`` in ``layers`` steps."""
    if not strides:
        stride = max(2, math.ceil((length / final_length) ** (1 / layers))) if layers else 2
        return [stride] * layers
    if len(strides) != layers:
        raise ValueError(f"{who}.strides needs one stride per channel entry ({layers}), got {list(strides)}")
    return list(strides)


@register_encoder("conv1d")
class Conv1dEncoder(Encoder):
    """Strided 1-D convolutions over a signal, then a dense layer: ``x: [B, C, L] -> [B, hidden]``.

    For waveforms (``data.representation=waveform``). Each layer has kernel 2s and stride s;
    without ``strides`` given, one stride for all layers is chosen from the length so that
    the last layer has about ``final_length`` steps (8000 samples, 4 layers: stride 5).

    Args:
        channels: output channels of each strided convolution.
        strides: stride of each layer (empty: chosen from the length).
        final_length: time steps the chosen strides aim at after the last layer.
        hidden: width of the dense layer after flattening (0: no dense layer).
        activation: activation by name.
    """

    modalities = frozenset({"audio"})

    @classmethod
    def incompatibility(cls, spec: DataSpec) -> str | None:
        waveform = "needs [C, L] signals (data.representation=waveform)"
        return super().incompatibility(spec) or shape_mismatch(spec, 2, waveform)

    def __init__(
        self,
        spec: DataSpec,
        *,
        channels: list[int] = [32, 64, 128, 256],  # noqa: B006
        strides: list[int] = [],  # noqa: B006
        final_length: int = 16,
        hidden: int = 256,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        c, length = spec.event_shape
        strides = layer_strides("encoder", strides, length, len(channels), final_length)
        layers: list[nn.Module] = []
        for c_in, c_out, s in zip([c, *channels], channels, strides):
            layers += [nn.Conv1d(c_in, c_out, 2 * s, stride=s, padding=s // 2), make_activation(activation)]
        with torch.no_grad():
            flat = nn.Sequential(*layers)(torch.zeros(1, c, length)).numel()
        self.net = nn.Sequential(*layers, *dense_head(flat, hidden, activation))
        self.out_features = hidden or flat

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.net(x)
