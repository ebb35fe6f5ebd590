"""The contracts every part honours: the one page a plugin author reads.

Parts are plain ``nn.Module`` classes. genkit builds them in the order
data -> likelihood -> encoder -> posterior -> prior -> decoder and passes the
*wiring* arguments (``WIRING``) by parameter name; everything else in a
constructor is a keyword-only user parameter with a default, exposed as config.
Parts exchange ``torch.distributions`` objects, so the ELBO is written once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from torch import Tensor, nn
from torch.distributions import Distribution

from genkit.spec import DataSpec

#: Arguments genkit supplies by name; they never appear in configs. ``seed`` is the run's
#: ``seed``, for parts with randomness of their own (data order, binarisation).
WIRING: frozenset[str] = frozenset({"spec", "in_features", "latent_dim", "param_shape", "encode", "seed"})


class Part(nn.Module, ABC):
    """Common base: declares which data a part can serve."""

    #: Modalities this part accepts; empty means any.
    modalities: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def incompatibility(cls, spec: DataSpec) -> str | None:
        """Why this part cannot serve ``spec``, or None when it can.

        Checked before anything is built, so a bad combination fails at composition.
        Subclasses extend it (call ``super()`` first) for shape requirements.
        """
        if cls.modalities and spec.modality not in cls.modalities:
            return f"reads {'/'.join(sorted(cls.modalities))} data, but the data is {spec.describe()}"
        return None


class Encoder(Part):
    """``x: [B, *event_shape] (mask: [B, T]) -> features: [B, out_features]``.

    Constructed with ``spec``; must set ``self.out_features``. For variable-length data
    (``spec.variable_length``) ``mask`` marks the real steps, and a batch's time dimension
    may be shorter than ``event_shape[0]`` (the maximum): batches are cut to their longest member.
    """

    out_features: int

    @abstractmethod
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor: ...


class Posterior(Part):
    """``features: [B, in_features] -> q(z|x)``, batch ``[B]``, event ``[latent_dim]``, reparameterised.

    Constructed with ``in_features`` and ``latent_dim``.
    """

    @abstractmethod
    def forward(self, features: Tensor) -> Distribution: ...


class Prior(Part):
    """``() -> p(z)``, batch ``[]``, event ``[latent_dim]``; needs ``log_prob`` and ``sample``.

    Constructed with ``latent_dim``; may also declare ``spec`` and ``encode`` (a callable
    ``x -> q(z|x)``, for priors built from the encoder such as the VampPrior).
    """

    @abstractmethod
    def forward(self) -> Distribution: ...


class Likelihood(Part):
    """``params: [B, *param_shape] -> p(x|z)`` with batch ``[B]``, event = ``spec.event_shape``.

    Constructed with ``spec``; must set ``self.param_shape`` (what the decoder outputs).
    ``log_prob(x)`` returns ``[B]`` nats summed over the event (and respecting ``mask``).
    """

    #: Value ranges (``DataSpec.support``) this likelihood is a density for.
    supports: ClassVar[frozenset[str]] = frozenset()
    param_shape: tuple[int, ...]

    @classmethod
    def incompatibility(cls, spec: DataSpec) -> str | None:
        reason = super().incompatibility(spec)
        if reason is None and cls.supports and spec.support not in cls.supports:
            reason = f"is a density for {'/'.join(sorted(cls.supports))} values, but the data is {spec.describe()}"
        return reason

    @abstractmethod
    def forward(self, params: Tensor, mask: Tensor | None = None) -> Distribution: ...


class Decoder(Part):
    """``z: [B, latent_dim] -> params: [B, *param_shape]``.

    Constructed with ``spec``, ``latent_dim`` and ``param_shape``. Autoregressive
    decoders read ``x`` (teacher forcing; the output's time dimension is then ``x``'s),
    set ``autoregressive = True`` and provide ``generate(z) -> (ids, mask)`` for sampling
    (``genkit.sequences.SequenceDecoder`` implements it given ``start`` and ``run``).
    """

    autoregressive: ClassVar[bool] = False

    @abstractmethod
    def forward(self, z: Tensor, x: Tensor | None = None, mask: Tensor | None = None) -> Tensor: ...


EncodeFn = Callable[[Tensor], Distribution]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "tanh": nn.Tanh,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation layer chosen by name (configs hold names, never classes)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None
