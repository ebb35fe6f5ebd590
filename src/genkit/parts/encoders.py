"""Every built-in encoder: ``mlp`` (any fixed shape, flattened), ``conv`` (images, spectrograms),
``conv1d`` (waveforms), and over token sequences ``gru``, ``lstm`` and ``transformer``."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from genkit.parts.base import Encoder
from genkit.parts.layers import (
    TORCH_INIT,
    check_heads,
    dense_head,
    halvings,
    initialise,
    layer_strides,
    lengths_of,
    make_activation,
    mlp,
    not_text,
    shape_mismatch,
)
from genkit.registry import register_encoder
from genkit.spec import DataSpec, Vocabulary


@register_encoder("mlp")
class MLPEncoder(Encoder):
    """Flatten, then dense layers: ``x: [B, *event_shape] -> [B, hidden[-1]]``.

    Args:
        hidden: widths of the dense layers (the seed Keras model uses [128, 64]).
        activation: activation by name (relu, gelu, silu, elu, leaky_relu, tanh).
        init: weight initialisation of the dense and convolution layers by its torch.nn.init or
            Keras name (``torch``: PyTorch's default; ``glorot_uniform``: Keras's; biases then zero).
    """

    modalities = frozenset({"image", "audio"})

    def __init__(
        self, spec: DataSpec, *, hidden: tuple[int, ...] = (256, 128), activation: str = "relu", init: str = TORCH_INIT
    ) -> None:
        super().__init__()
        self.net = mlp([spec.numel, *hidden], activation)
        self.out_features = hidden[-1] if hidden else spec.numel
        initialise(self, init)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.net(x.flatten(1))


@register_encoder("conv")
class ConvEncoder(Encoder):
    """Strided 3x3 convolutions, then a dense layer: ``x: [B, C, H, W] -> [B, hidden]``.

    Each convolution halves height and width (rounding up), so 1x8x8, 1x28x28 and
    3x32x32 inputs all work with the same settings.

    Args:
        channels: output channels of each stride-2 convolution.
        hidden: width of the dense layer after flattening (0: no dense layer).
        activation: activation by name.
        init: weight initialisation of the dense and convolution layers by its torch.nn.init or
            Keras name (``torch``: PyTorch's default; ``glorot_uniform``: Keras's; biases then zero).
    """

    modalities = frozenset({"image", "audio"})

    @classmethod
    def incompatibility(cls, spec: DataSpec) -> str | None:
        return super().incompatibility(spec) or shape_mismatch(spec, 3, "needs [C, H, W] inputs")

    def __init__(
        self,
        spec: DataSpec,
        *,
        channels: tuple[int, ...] = (32, 64),
        hidden: int = 256,
        activation: str = "relu",
        init: str = TORCH_INIT,
    ) -> None:
        super().__init__()
        c, h, w = spec.event_shape
        layers: list[nn.Module] = []
        for c_in, c_out in zip([c, *channels], channels):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1), make_activation(activation)]
        flat = (channels[-1] if channels else c) * halvings(h, len(channels)) * halvings(w, len(channels))
        self.net = nn.Sequential(*layers, *dense_head(flat, hidden, activation))
        self.out_features = hidden or flat
        initialise(self, init)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.net(x)


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
        init: weight initialisation of the dense and convolution layers by its torch.nn.init or
            Keras name (``torch``: PyTorch's default; ``glorot_uniform``: Keras's; biases then zero).
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
        channels: tuple[int, ...] = (32, 64, 128, 256),
        strides: tuple[int, ...] = (),
        final_length: int = 16,
        hidden: int = 256,
        activation: str = "relu",
        init: str = TORCH_INIT,
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
        initialise(self, init)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.net(x)


class SequenceEncoder(Encoder):
    """Shared by the token encoders: embeddings of the vocabulary, padding id excluded."""

    modalities = frozenset({"text"})

    @classmethod
    def incompatibility(cls, spec: DataSpec) -> str | None:
        return super().incompatibility(spec) or not_text(spec)

    def __init__(self, spec: DataSpec, embedding_dim: int) -> None:
        super().__init__()
        vocabulary = Vocabulary.of(spec)
        self.embed = nn.Embedding(vocabulary.vocab_size, embedding_dim, padding_idx=vocabulary.pad)


class RNNEncoder(SequenceEncoder):
    """A (bi)directional recurrent network; features are the last layer's final states at
    each sequence's real end (packed sequences: padding is never read).

    Args:
        embedding_dim: size of the token embeddings.
        hidden: units per direction and layer.
        layers: stacked layers.
        bidirectional: read the sentence both ways and concatenate the final states.
        dropout: between stacked layers.
    """

    rnn_class: ClassVar[type[nn.RNNBase]]
    not_exportable = (
        "reads packed sequences (each sentence only to its own length), which torch.export cannot capture; "
        "the encoder of a model trained with encoder=transformer exports"
    )

    def __init__(
        self,
        spec: DataSpec,
        *,
        embedding_dim: int = 256,
        hidden: int = 256,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(spec, embedding_dim)
        self.rnn = self.rnn_class(
            embedding_dim,
            hidden,
            num_layers=layers,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
            batch_first=True,
        )
        self.directions = 2 if bidirectional else 1
        self.out_features = hidden * self.directions

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(x), lengths_of(x, mask).cpu(), batch_first=True, enforce_sorted=False
        )
        _, state = self.rnn(packed)
        h = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
        return h[-self.directions :].transpose(0, 1).reshape(len(x), -1)


@register_encoder("gru")
class GRUEncoder(RNNEncoder):
    """GRU over token embeddings: ``x: [B, T] ids (mask) -> [B, hidden * directions]`` (options
    as ``RNNEncoder``)."""

    rnn_class = nn.GRU


@register_encoder("lstm")
class LSTMEncoder(RNNEncoder):
    """LSTM over token embeddings: ``x: [B, T] ids (mask) -> [B, hidden * directions]`` (options
    as ``RNNEncoder``)."""

    rnn_class = nn.LSTM


@register_encoder("transformer")
class TransformerEncoder(SequenceEncoder):
    """Pre-norm Transformer encoder with learned positions; features are the mean over real tokens.

    ``x: [B, T] ids (mask) -> [B, width]``.

    Args:
        width: model width (embedding size).
        heads: attention heads (width must be a multiple).
        layers: encoder layers.
        feedforward: width of each layer's feed-forward block.
        dropout: dropout inside the layers.
    """

    def __init__(
        self,
        spec: DataSpec,
        *,
        width: int = 256,
        heads: int = 4,
        layers: int = 2,
        feedforward: int = 1024,
        dropout: float = 0.1,
    ) -> None:
        check_heads(width, heads, "encoder")
        super().__init__(spec, width)
        self.position = nn.Embedding(spec.event_shape[0], width)
        layer = nn.TransformerEncoderLayer(width, heads, feedforward, dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out_features = width

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        steps = torch.arange(x.shape[1], device=x.device)
        h = self.layers(self.embed(x) + self.position(steps), src_key_padding_mask=None if mask is None else ~mask)
        h = self.norm(h)
        if mask is None:
            return h.mean(1)
        weights = mask.unsqueeze(-1).to(h.dtype)
        return (h * weights).sum(1) / weights.sum(1).clamp(min=1)
