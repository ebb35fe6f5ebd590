"""Built-in decoders for fixed-size outputs: ``mlp``, ``conv`` (images, spectrograms) and
``conv1d`` (waveforms), the last two by transposed convolutions."""

from __future__ import annotations

import math
from math import prod

from torch import Tensor, nn

from genkit.encoders import halvings, layer_strides, mlp, shape_mismatch
from genkit.parts import Decoder, make_activation
from genkit.registry import register_decoder
from genkit.spec import DataSpec


def latent_dense(latent_dim: int, hidden: int, size: int, activation: str) -> nn.Sequential:
    """The start of a conv decoder: z through a dense layer of ``hidden`` units (0: none) to the
    ``size`` features of its first feature map."""
    dense: list[nn.Module] = [nn.Linear(latent_dim, hidden), make_activation(activation)] if hidden else []
    return nn.Sequential(*dense, nn.Linear(hidden or latent_dim, size), make_activation(activation))


@register_decoder("mlp")
class MLPDecoder(Decoder):
    """Dense layers, then one linear layer to the likelihood's parameters: ``z -> [B, *param_shape]``.

    Args:
        hidden: widths of the dense layers, from z outwards (the seed Keras model uses [64, 128]).
        activation: activation by name.
    """

    modalities = frozenset({"image", "audio"})

    def __init__(
        self,
        spec: DataSpec,
        latent_dim: int,
        param_shape: tuple[int, ...],
        *,
        hidden: list[int] = [128, 256],  # noqa: B006
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.param_shape = tuple(param_shape)
        self.net = nn.Sequential(
            mlp([latent_dim, *hidden], activation), nn.Linear(hidden[-1] if hidden else latent_dim, prod(param_shape))
        )

    def forward(self, z: Tensor, x: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        return self.net(z).view(-1, *self.param_shape)


@register_decoder("conv")
class ConvDecoder(Decoder):
    """Dense layer to a small feature map, then stride-2 transposed convolutions.

    ``z: [B, latent_dim] -> [B, P, H, W]``, where ``(P, H, W)`` is the likelihood's
    ``param_shape``. The map starts at ceil(H / 2^n) x ceil(W / 2^n) for n = len(channels)
    and is cropped to H x W, so 8x8, 28x28 and 32x32 outputs all work.

    Args:
        channels: channels of the feature maps, from the smallest map outwards; each
            transposed convolution doubles the spatial size.
        hidden: width of the dense layer after z (0: none).
        activation: activation by name.
    """

    modalities = frozenset({"image", "audio"})

    @classmethod
    def incompatibility(cls, spec: DataSpec) -> str | None:
        return super().incompatibility(spec) or shape_mismatch(spec, 3, "produces [C, H, W] outputs")

    def __init__(
        self,
        spec: DataSpec,
        latent_dim: int,
        param_shape: tuple[int, ...],
        *,
        channels: list[int] = [64, 32],  # noqa: B006
        hidden: int = 256,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("decoder.channels needs at least one entry")
        out_channels, self.height, self.width = param_shape
        self.start = (channels[0], halvings(self.height, len(channels)), halvings(self.width, len(channels)))
        self.dense = latent_dense(latent_dim, hidden, prod(self.start), activation)
        ups: list[nn.Module] = []
        for c_in, c_out in zip(channels, [*channels[1:], out_channels]):
            up = nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1)
            ups += [up, make_activation(activation)]
        self.ups = nn.Sequential(*ups[:-1])  # no activation on the likelihood's parameters

    def forward(self, z: Tensor, x: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        h = self.ups(self.dense(z).view(-1, *self.start))
        return h[..., : self.height, : self.width]


@register_decoder("conv1d")
class Conv1dDecoder(Decoder):
    """Dense layer to a short feature sequence, then strided 1-D transposed convolutions.

    ``z: [B, latent_dim] -> [B, P, L]`` for waveforms; the mirror of the ``conv1d`` encoder
    (kernel 2s, stride s, strides chosen from the length unless given). The sequence starts
    at ceil(L / prod(strides)) steps and is cropped to L.

    Args:
        channels: channels of the feature sequences, from the shortest outwards.
        strides: stride of each layer (empty: chosen from the length).
        final_length: steps the chosen strides aim at for the shortest sequence.
        hidden: width of the dense layer after z (0: none).
        activation: activation by name.
    """

    modalities = frozenset({"audio"})

    @classmethod
    def incompatibility(cls, spec: DataSpec) -> str | None:
        waveform = "produces [C, L] signals (data.representation=waveform)"
        return super().incompatibility(spec) or shape_mismatch(spec, 2, waveform)

    def __init__(
        self,
        spec: DataSpec,
        latent_dim: int,
        param_shape: tuple[int, ...],
        *,
        channels: list[int] = [256, 128, 64, 32],  # noqa: B006
        strides: list[int] = [],  # noqa: B006
        final_length: int = 16,
        hidden: int = 256,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("decoder.channels needs at least one entry")
        out_channels, self.length = param_shape
        strides = layer_strides("decoder", strides, self.length, len(channels), final_length)
        self.start = (channels[0], math.ceil(self.length / prod(strides)))
        self.dense = latent_dense(latent_dim, hidden, prod(self.start), activation)
        ups: list[nn.Module] = []
        for c_in, c_out, s in zip(channels, [*channels[1:], out_channels], strides):
            ups += [nn.ConvTranspose1d(c_in, c_out, 2 * s, stride=s, padding=s // 2), make_activation(activation)]
        self.ups = nn.Sequential(*ups[:-1])  # no activation on the likelihood's parameters

    def forward(self, z: Tensor, x: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        return self.ups(self.dense(z).view(-1, *self.start))[..., : self.length]
