"""Every built-in decoder: ``mlp``, ``conv`` (images, spectrograms) and ``conv1d`` (waveforms) for
fixed-size outputs, and the autoregressive token decoders ``gru``, ``lstm`` and ``transformer``.

Token decoders read the sentence during training (teacher forcing: ``<s> w1 .. wn`` predicts
``w1 .. wn </s>``) with optional word dropout (Bowman et al. 2016), and at sampling time
generate token by token from z (``generate``): greedy, or sampled with a temperature and
top-p (nucleus, Holtzman et al. 2020), batched, stopping at ``</s>``.
"""

from __future__ import annotations

import math
from math import prod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from genkit.parts.base import Decoder
from genkit.parts.layers import (
    TORCH_INIT,
    check_heads,
    halvings,
    initialise,
    latent_dense,
    layer_strides,
    make_activation,
    mlp,
    not_text,
    shape_mismatch,
)
from genkit.registry import register_decoder
from genkit.spec import DataSpec, Vocabulary


@register_decoder("mlp")
class MLPDecoder(Decoder):
    """Dense layers, then one linear layer to the likelihood's parameters: ``z -> [B, *param_shape]``.

    Args:
        hidden: widths of the dense layers, from z outwards (the seed Keras model uses [64, 128]).
        activation: activation by name.
        init: weight initialisation of the dense and convolution layers by its torch.nn.init or
            Keras name (``torch``: PyTorch's default; ``glorot_uniform``: Keras's; biases then zero).
    """

    modalities = frozenset({"image", "audio"})

    def __init__(
        self,
        spec: DataSpec,
        latent_dim: int,
        param_shape: tuple[int, ...],
        *,
        hidden: tuple[int, ...] = (128, 256),
        activation: str = "relu",
        init: str = TORCH_INIT,
    ) -> None:
        super().__init__()
        self.param_shape = tuple(param_shape)
        self.net = nn.Sequential(
            mlp([latent_dim, *hidden], activation), nn.Linear(hidden[-1] if hidden else latent_dim, prod(param_shape))
        )
        initialise(self, init)

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
        init: weight initialisation of the dense and convolution layers by its torch.nn.init or
            Keras name (``torch``: PyTorch's default; ``glorot_uniform``: Keras's; biases then zero).
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
        channels: tuple[int, ...] = (64, 32),
        hidden: int = 256,
        activation: str = "relu",
        init: str = TORCH_INIT,
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
        initialise(self, init)

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
        init: weight initialisation of the dense and convolution layers by its torch.nn.init or
            Keras name (``torch``: PyTorch's default; ``glorot_uniform``: Keras's; biases then zero).
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
        channels: tuple[int, ...] = (256, 128, 64, 32),
        strides: tuple[int, ...] = (),
        final_length: int = 16,
        hidden: int = 256,
        activation: str = "relu",
        init: str = TORCH_INIT,
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
        initialise(self, init)

    def forward(self, z: Tensor, x: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        return self.ups(self.dense(z).view(-1, *self.start))[..., : self.length]


GENERATION_METHODS = ("greedy", "sample")


class SequenceDecoder(Decoder):
    """Shared by the autoregressive token decoders: teacher forcing with word dropout, and generation.

    Subclasses implement ``start(z) -> state`` and ``run(inputs, z, state) -> (hidden [B, T, H], state)``
    over embedded input tokens; ``forward`` and ``generate`` are written once here.
    """

    autoregressive = True
    modalities = frozenset({"text"})
    not_exportable = (
        "generates token by token, each step reading the tokens before it, so there is no single z -> output "
        "graph; export part=encoder, or generate with genkit.load(...).sample() in Python"
    )

    @classmethod
    def incompatibility(cls, spec: DataSpec) -> str | None:
        return super().incompatibility(spec) or not_text(spec)

    def __init__(self, spec: DataSpec, param_shape: tuple[int, ...], embedding_dim: int, word_dropout: float) -> None:
        super().__init__()
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"decoder.word_dropout must be in [0, 1), got {word_dropout}")
        self.ids = Vocabulary.of(spec)
        self.max_length = int(param_shape[0])
        self.embed = nn.Embedding(self.ids.vocab_size, embedding_dim, padding_idx=self.ids.pad)
        self.word_dropout = word_dropout

    def teacher_inputs(self, x: Tensor) -> Tensor:
        """``<s>`` followed by the sentence without its last step; in training, words are
        replaced by ``<unk>`` with probability ``word_dropout`` so the decoder leans on z."""
        inputs = torch.cat([torch.full_like(x[:, :1], self.ids.bos), x[:, :-1]], 1)
        if self.training and self.word_dropout > 0:
            drop = torch.rand(inputs.shape, device=x.device) < self.word_dropout
            drop[:, 0] = False
            inputs = inputs.masked_fill(drop, self.ids.unk)
        return inputs

    def forward(self, z: Tensor, x: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        if x is None:
            raise ValueError("an autoregressive decoder reads the sentence (teacher forcing); sample with generate(z)")
        hidden, _ = self.run(self.embed(self.teacher_inputs(x)), z, self.start(z))
        return self.out(hidden)

    def start(self, z: Tensor) -> Any:
        raise NotImplementedError

    def run(self, inputs: Tensor, z: Tensor, state: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError

    @torch.no_grad()
    def generate(
        self,
        z: Tensor,
        *,
        method: str = "greedy",
        token_temperature: float = 1.0,
        top_p: float = 1.0,
        max_length: int = 0,
    ) -> tuple[Tensor, Tensor]:
        """Decode z ``[B, D]`` token by token: ids ``[B, L]`` and mask ``[B, L]`` (``</s>`` included,
        padding after it); every sequence stops at ``</s>`` or after ``max_length`` tokens
        (0 or more than the data's maximum: that maximum). ``sample`` draws each token at ``token_temperature`` from the
        top-``top_p`` mass; ``greedy`` takes the most likely one."""
        if method not in GENERATION_METHODS:
            raise ValueError(f"method must be one of {GENERATION_METHODS}, got {method!r}")
        if token_temperature <= 0 or not 0 < top_p <= 1:
            raise ValueError(f"token_temperature must be > 0 and top_p in (0, 1], got {token_temperature} and {top_p}")
        limit = min(max_length, self.max_length) if max_length > 0 else self.max_length
        batch = len(z)
        token = torch.full((batch,), self.ids.bos, dtype=torch.long, device=z.device)
        done = torch.zeros(batch, dtype=torch.bool, device=z.device)
        state = self.start(z)
        ids, mask = [], []
        for _ in range(limit):
            hidden, state = self.run(self.embed(token[:, None]), z, state)
            logits = self.out(hidden[:, -1]).float()
            logits[:, [self.ids.pad, self.ids.bos]] = float("-inf")  # never targets: never generated
            token = logits.argmax(-1) if method == "greedy" else sample_top_p(logits / token_temperature, top_p)
            token = token.masked_fill(done, self.ids.pad)
            mask.append(~done)
            ids.append(token)
            done = done | (token == self.ids.eos)
            if bool(done.all()):
                break
        return torch.stack(ids, 1), torch.stack(mask, 1)


def sample_top_p(logits: Tensor, top_p: float) -> Tensor:
    """One token per row from the smallest set of most likely tokens whose mass reaches ``top_p``."""
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        mass_before = sorted_logits.softmax(-1).cumsum(-1) - sorted_logits.softmax(-1)
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.distributions.Categorical(logits=logits).sample()


CONDITIONINGS = ("both", "init", "input", "none")


class RNNDecoder(SequenceDecoder):
    """A recurrent decoder conditioned on z through its initial state and/or every input step.

    Args:
        embedding_dim: size of the token embeddings.
        hidden: units per layer.
        layers: stacked layers.
        conditioning: how z enters: ``init`` (initial state), ``input`` (concatenated to every
            input step), ``both``, or ``none`` (a plain language model: z ignored).
        word_dropout: share of input words replaced by ``<unk>`` in training (Bowman et al. 2016).
        dropout: on the inputs and outputs of the recurrent layers.
    """

    rnn_class: ClassVar[type[nn.RNNBase]]

    def __init__(
        self,
        spec: DataSpec,
        latent_dim: int,
        param_shape: tuple[int, ...],
        *,
        embedding_dim: int = 256,
        hidden: int = 256,
        layers: int = 1,
        conditioning: str = "both",
        word_dropout: float = 0.0,
        dropout: float = 0.3,
    ) -> None:
        super().__init__(spec, param_shape, embedding_dim, word_dropout)
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"decoder.conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        self.conditioning, self.layers, self.hidden = conditioning, layers, hidden
        self.z_input = conditioning in ("both", "input")
        self.rnn = self.rnn_class(
            embedding_dim + (latent_dim if self.z_input else 0),
            hidden,
            num_layers=layers,
            dropout=dropout if layers > 1 else 0.0,
            batch_first=True,
        )
        self.initial = nn.Linear(latent_dim, layers * hidden) if conditioning in ("both", "init") else None
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, self.ids.vocab_size)

    def start(self, z: Tensor) -> Any:
        if self.initial is None:
            h = z.new_zeros(self.layers, len(z), self.hidden)
        else:
            h = torch.tanh(self.initial(z)).view(len(z), self.layers, self.hidden).transpose(0, 1).contiguous()
        return (h, torch.zeros_like(h)) if self.rnn_class is nn.LSTM else h

    def run(self, inputs: Tensor, z: Tensor, state: Any) -> tuple[Tensor, Any]:
        inputs = self.dropout(inputs)
        if self.z_input:
            inputs = torch.cat([inputs, z[:, None, :].expand(-1, inputs.shape[1], -1)], -1)
        hidden, state = self.rnn(inputs, state)
        return self.dropout(hidden), state


@register_decoder("gru")
class GRUDecoder(RNNDecoder):
    """GRU language model conditioned on z: ``z, x -> logits [B, T, vocab]`` (teacher forcing;
    options as ``RNNDecoder``)."""

    rnn_class = nn.GRU


@register_decoder("lstm")
class LSTMDecoder(RNNDecoder):
    """LSTM language model conditioned on z: ``z, x -> logits [B, T, vocab]`` (teacher forcing;
    options as ``RNNDecoder``)."""

    rnn_class = nn.LSTM


@register_decoder("transformer")
class TransformerDecoder(SequenceDecoder):
    """Causal pre-norm Transformer conditioned on z as a prefix position and/or added to every input.

    ``z, x -> logits [B, T, vocab]``; generation re-reads the prefix at each step.

    Args:
        width: model width (embedding size).
        heads: attention heads (width must be a multiple).
        layers: decoder layers.
        feedforward: width of each layer's feed-forward block.
        dropout: dropout inside the layers.
        conditioning: how z enters: ``init`` (a projected z is the first position, read by
            attention), ``input`` (added to every input position), ``both``, or ``none`` (a
            plain language model: z ignored).
        word_dropout: share of input words replaced by ``<unk>`` in training (Bowman et al. 2016).
    """

    def __init__(
        self,
        spec: DataSpec,
        latent_dim: int,
        param_shape: tuple[int, ...],
        *,
        width: int = 256,
        heads: int = 4,
        layers: int = 2,
        feedforward: int = 1024,
        dropout: float = 0.1,
        conditioning: str = "both",
        word_dropout: float = 0.0,
    ) -> None:
        check_heads(width, heads, "decoder")
        super().__init__(spec, param_shape, width, word_dropout)
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"decoder.conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        self.prefix = nn.Linear(latent_dim, width) if conditioning in ("both", "init") else None
        self.z_input = nn.Linear(latent_dim, width) if conditioning in ("both", "input") else None
        self.position = nn.Embedding(self.max_length + 1, width)
        layer = nn.TransformerEncoderLayer(width, heads, feedforward, dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, self.ids.vocab_size)

    def start(self, z: Tensor) -> Any:
        return None  # the state is the embedded prefix read so far

    def run(self, inputs: Tensor, z: Tensor, state: Any) -> tuple[Tensor, Any]:
        read = inputs if state is None else torch.cat([state, inputs], 1)
        h = read if self.z_input is None else read + self.z_input(z)[:, None, :]
        if self.prefix is not None:
            h = torch.cat([self.prefix(z)[:, None, :], h], 1)
        steps = h.shape[1]
        h = h + self.position(torch.arange(steps, device=h.device))
        causal = nn.Transformer.generate_square_subsequent_mask(steps, device=h.device, dtype=h.dtype)
        h = self.norm(self.layers(h, mask=causal, is_causal=True))
        return h[:, -inputs.shape[1] :], read
