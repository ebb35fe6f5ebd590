"""The contracts every model part honours, and their check: the one page a plugin author reads.

Parts are plain ``nn.Module`` classes. genkit builds them in the order
data -> likelihood -> encoder -> posterior -> prior -> decoder and passes the
*wiring* arguments (``genkit.registry.WIRING``) by parameter name; everything else in a
constructor is a keyword-only user parameter with a default, exposed as config.
Parts exchange ``torch.distributions`` objects, so the ELBO is written once.

genkit checks every model it composes against these contracts on a real forward pass of
a tiny batch (``verify``), so a part that breaks its contract (a wrong shape, a plain
tensor where a distribution belongs, a sample without gradients) fails at composition
with a message naming the part, where it comes from and what to fix, instead of as a
shape error deep inside training. ``genkit.testing.check_part`` runs the same checks,
plus training steps and a reload, for plugin authors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from genkit.errors import PartContractError
from genkit.registry import registry
from genkit.spec import DataSpec
from genkit.training.objective import analytic_kl

if TYPE_CHECKING:
    from genkit.model import VAE


class Part(nn.Module, ABC):
    """Common base: declares which data a part can serve."""

    #: Modalities this part accepts; empty means any.
    modalities: ClassVar[frozenset[str]] = frozenset()
    #: Why ``genkit export`` cannot write this part as one graph (said to the user); empty: it can try.
    not_exportable: ClassVar[str] = ""

    @classmethod
    def incompatibility(cls, spec: DataSpec) -> str | None:
        """Why this part cannot serve ``spec``, or None when it can.

        Checked before anything is built, so a bad combination fails at composition.
        Subclasses extend it (call ``super()`` first) for shape requirements.
        """
        if cls.modalities and spec.modality not in cls.modalities:
            return f"reads {'/'.join(sorted(cls.modalities))} data, but the data is {spec.describe()}"
        return None

    def wires(self, built: dict[str, Part]) -> dict[str, Any]:
        """Wiring arguments this part gives the parts genkit builds after it (``built``: the parts so far)."""
        return {}


class Encoder(Part):
    """``x: [B, *event_shape] (mask: [B, T]) -> features: [B, out_features]``.

    Constructed with ``spec``; must set ``self.out_features``. For variable-length data
    (``spec.variable_length``) ``mask`` marks the real steps, and a batch's time dimension
    may be shorter than ``event_shape[0]`` (the maximum): batches are cut to their longest member.
    """

    out_features: int

    def wires(self, built: dict[str, Part]) -> dict[str, Any]:
        return {"in_features": self.out_features}

    @abstractmethod
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor: ...


class Posterior(Part):
    """``features: [B, in_features] -> q(z|x)``, batch ``[B]``, event ``[latent_dim]``, reparameterised.

    Constructed with ``in_features`` and ``latent_dim``.
    """

    def wires(self, built: dict[str, Part]) -> dict[str, Any]:
        return {"encode": Encode(built["encoder"], self)}

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

    def wires(self, built: dict[str, Part]) -> dict[str, Any]:
        return {"param_shape": self.param_shape}

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
    (``genkit.parts.decoders.SequenceDecoder`` implements it given ``start`` and ``run``).
    """

    autoregressive: ClassVar[bool] = False

    @abstractmethod
    def forward(self, z: Tensor, x: Tensor | None = None, mask: Tensor | None = None) -> Tensor: ...


EncodeFn = Callable[[Tensor], Distribution]


class Encode:
    """``x -> q(z|x)`` through the model's encoder and posterior: the ``encode`` hook priors such as
    the VampPrior receive. A plain object, not a Module, so the parameters are not registered twice;
    picklable, unlike a closure, so models survive deepcopy and process spawning."""

    def __init__(self, encoder: Encoder, posterior: Posterior) -> None:
        self.encoder, self.posterior = encoder, posterior

    def __call__(self, x: Tensor) -> Distribution:
        return self.posterior(self.encoder(x))


#: Examples in the probe batch: more than one, so batch and event dimensions cannot be confused.
PROBE_SIZE = 3


def synthetic_batch(spec: DataSpec, n: int = PROBE_SIZE) -> dict[str, Tensor]:
    """``n`` random examples that ``spec`` allows (with a mask of unequal lengths when variable)."""
    shape = (n, *spec.event_shape)
    if spec.support == "binary":
        x = torch.randint(0, 2, shape).float()
    elif spec.support == "unit_interval":
        x = torch.rand(shape)
    elif spec.support == "categorical":
        x = torch.randint(0, spec.vocabulary.vocab_size if spec.vocabulary else 2, shape)
    else:
        x = torch.randn(shape)
    batch = {"x": x}
    if spec.variable_length:
        steps = spec.event_shape[0]
        lengths = torch.tensor([steps - i * steps // (2 * n) for i in range(n)])
        batch["mask"] = torch.arange(steps)[None, :] < lengths[:, None]
    return batch


def describe(kind: str, part: Any) -> str:
    """``encoder 'conv' (genkit)`` or, for an unregistered class, its import path."""
    target = f"{type(part).__module__}.{type(part).__qualname__}"
    for entry in registry(kind):
        if entry.target == target:
            return f"{kind} {entry.name!r} ({entry.origin})"
    return f"{kind} {target}"


def shape(value: Any) -> str:
    return str(list(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def check_distribution(value: Any, batch: tuple[int, ...], event: tuple[int, ...], what: str) -> list[str]:
    """Problems with ``value`` as a distribution of the given batch and event shapes."""
    if not isinstance(value, Distribution):
        return [f"{what} must be a torch.distributions.Distribution, got {type(value).__name__}"]
    problems = []
    if tuple(value.batch_shape) != batch:
        problems.append(f"{what} has batch_shape {list(value.batch_shape)}, expected {list(batch)}")
    if tuple(value.event_shape) != event:
        problems.append(
            f"{what} has event_shape {list(value.event_shape)}, expected {list(event)} "
            "(wrap per-element distributions in Independent(..., reinterpreted_batch_ndims))"
        )
    return problems


def check_finite_shape(value: Any, expected: tuple[int, ...], what: str) -> list[str]:
    if not isinstance(value, Tensor):
        return [f"{what} must be a tensor, got {type(value).__name__}"]
    if tuple(value.shape) != expected:
        return [f"{what} has shape {shape(value)}, expected {list(expected)}"]
    if value.is_floating_point() and not torch.isfinite(value).all():
        return [f"{what} is not finite"]
    return []


def probe(kind: str, part: Any, step: Callable[[], list[str]], problems: dict[str, list[str]]) -> Any:
    """Run one part's checks; an exception inside the part becomes a problem naming it."""
    try:
        found = step()
    except Exception as error:  # the point is to report a broken part, whatever it raises
        found = [f"raised {error.__class__.__name__}: {error}"]
    if found:
        problems.setdefault(describe(kind, part), []).extend(found)


def verify(model: VAE, batch: dict[str, Tensor] | None = None, where: str = "a probe batch") -> None:
    """Check every part of ``model`` against its contract on a probe batch, or on ``batch`` (described
    by ``where``): the model checks its first batch of real data too, since a part can be right on a
    few synthetic examples and wrong at the real batch size or on real values.

    Runs in eval mode without gradients and on a forked RNG, so neither the model's
    state nor the run's random stream changes.

    Raises:
        PartContractError: listing every broken part, what it did and what was expected.
    """
    spec, d = model.spec, model.latent_dim
    device = next(model.parameters(), torch.empty(0)).device
    problems: dict[str, list[str]] = {}
    found: dict[str, Any] = {}
    training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            batch = synthetic_batch(spec) if batch is None else batch
            n = len(batch["x"])
            x, mask = batch["x"].to(device), batch["mask"].to(device) if "mask" in batch else None
            event, param_shape = tuple(spec.event_shape), tuple(model.likelihood.param_shape)
            if spec.variable_length:  # a batch is padded to its longest sequence, not to the spec's length
                event, param_shape = (x.shape[1], *event[1:]), (x.shape[1], *param_shape[1:])

            def encoder() -> list[str]:
                found["features"] = features = model.encoder(x, mask)
                expected = getattr(model.encoder, "out_features", None)
                if not isinstance(expected, int):
                    return ["must set self.out_features (an int) in __init__"]
                return check_finite_shape(features, (n, expected), "forward(x, mask)")

            def posterior() -> list[str]:
                q = model.posterior(found["features"])
                issues = check_distribution(q, (n,), (d,), "forward(features)")
                if issues:
                    return issues
                if not q.has_rsample:
                    return ["q(z|x) must be reparameterised (has_rsample=True), or no gradient reaches the encoder"]
                z = q.rsample((2,))
                issues = check_finite_shape(z, (2, n, d), "rsample((2,))") or check_finite_shape(
                    q.log_prob(z), (2, n), "log_prob(z)"
                )
                found["z"], found["q"] = z[0], q
                return issues

            def prior() -> list[str]:
                p = model.prior()
                issues = check_distribution(p, (), (d,), "forward()")
                if issues:
                    return issues
                z = p.sample((n,))
                issues = check_finite_shape(z, (n, d), "sample((n,))")
                issues = issues or check_finite_shape(p.log_prob(z), (n,), "log_prob(z)")
                # The bound's KL, analytic where torch knows the pair (which also fills torch's KL
                # dispatch cache before a compiled bound would trace the dispatch and break its graph).
                analytic = analytic_kl(found["q"], p) if "q" in found else None
                return issues or (check_finite_shape(analytic[0], (n,), "KL(q(z|x) || p(z))") if analytic else [])

            def decoder() -> list[str]:
                found["params"] = params = model.decoder(found["z"], x, mask)
                return check_finite_shape(params, (n, *param_shape), "forward(z, x, mask)")

            def likelihood() -> list[str]:
                px = model.likelihood(found["params"], mask)
                issues = check_distribution(px, (n,), event, "forward(params, mask)")
                return issues or check_finite_shape(px.log_prob(x), (n,), "log_prob(x)")

            probe("encoder", model.encoder, encoder, problems)
            if "features" in found:
                probe("posterior", model.posterior, posterior, problems)
            if not problems:  # a prior may use the encoder (VampPrior): blame the encoder first
                probe("prior", model.prior, prior, problems)
            if "z" in found:
                probe("decoder", model.decoder, decoder, problems)
            if "params" in found:
                probe("likelihood", model.likelihood, likelihood, problems)
    finally:
        model.train(training)
    if problems:
        listing = "; ".join(f"{part}: {', '.join(issues)}" for part, issues in problems.items())
        raise PartContractError(
            f"a part breaks its contract on {where} of {n} examples of {spec.describe()} data: {listing}. "
            "The contracts are in genkit.parts (docs/plugins.md); genkit.testing.check_part finds these in a test."
        )
