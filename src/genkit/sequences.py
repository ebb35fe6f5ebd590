"""Token-sequence parts: GRU, LSTM and Transformer encoders and autoregressive decoders.

Decoders read the sentence during training (teacher forcing: ``<s> w1 .. wn`` predicts
``w1 .. wn </s>``) with optional word dropout (Bowman et al. 2016), and at sampling time
generate token by token from z (``generate``): greedy, or sampled with a temperature and
top-p (nucleus, Holtzman et al. 2020), batched, stopping at ``</s>``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from genkit.data.text import TokenIds
from genkit.parts import Decoder, Encoder
from genkit.registry import register_decoder, register_encoder
from genkit.spec import DataSpec

GENERATION_METHODS = ("greedy", "sample")


def lengths_of(x: Tensor, mask: Tensor | None) -> Tensor:
    """Real length of every sequence ``[B]`` (the full width where there is no mask)."""
    return mask.sum(1) if mask is not None else torch.full((len(x),), x.shape[1], device=x.device)


def not_text(spec: DataSpec) -> str | None:
    if spec.support != "categorical" or "vocab_size" not in spec.extra:
        return f"reads token ids, but the data is {spec.describe()}"
    return None


class SequenceEncoder(Encoder):
    """Shared by the token encoders: embeddings of the vocabulary, padding id excluded."""

    modalities = frozenset({"text"})

    @classmethod
    def incompatibility(cls, spec: DataSpec) -> str | None:
        return super().incompatibility(spec) or not_text(spec)

    def __init__(self, spec: DataSpec, embedding_dim: int) -> None:
        super().__init__()
        ids = TokenIds.of(spec)
        self.embed = nn.Embedding(ids.vocab_size, embedding_dim, padding_idx=ids.pad)


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


def check_heads(width: int, heads: int, who: str) -> None:
    if width % heads:
        raise ValueError(f"{who}.width ({width}) must be a multiple of {who}.heads ({heads})")


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


class SequenceDecoder(Decoder):
    """Shared by the autoregressive token decoders: teacher forcing with word dropout, and generation.

    Subclasses implement ``start(z) -> state`` and ``run(inputs, z, state) -> (hidden [B, T, H], state)``
    over embedded input tokens; ``forward`` and ``generate`` are written once here.
    """

    autoregressive = True
    modalities = frozenset({"text"})

    @classmethod
    def incompatibility(cls, spec: DataSpec) -> str | None:
        return super().incompatibility(spec) or not_text(spec)

    def __init__(self, spec: DataSpec, param_shape: tuple[int, ...], embedding_dim: int, word_dropout: float) -> None:
        super().__init__()
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"decoder.word_dropout must be in [0, 1), got {word_dropout}")
        self.ids = TokenIds.of(spec)
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
