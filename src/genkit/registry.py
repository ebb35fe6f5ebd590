"""The kinds of parts, and one registry per kind; registering also generates the part's Hydra config.

``KINDS`` is the one table of what genkit composes: data, the five model parts (in the
order genkit builds them) and the model that holds them. Every list that follows the
kinds (composition, resume checks, the command line, ``genkit list``) is derived from it.

``@register_encoder("conv")`` records the class under a short name with its origin
(genkit, an installed plugin distribution, or a local module) and stores a config
node generated from the constructor signature in Hydra's ConfigStore under the
kind's group, so ``encoder=conv encoder.channels=[32,64]`` works with no YAML and
config and code cannot drift.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, TypeVar

from genkit import config, plugins
from genkit._moved import legacy_targets
from genkit.errors import DuplicatePartError, PartDefinitionError, UnknownPartError

#: Arguments genkit supplies to parts and data modules by name, with where each comes from; they
#: never appear in configs. ``seed`` is the run's ``seed``, for parts with randomness of their own.
WIRING_SOURCES: dict[str, str] = {
    "spec": "the data module",
    "in_features": "the encoder's out_features",
    "latent_dim": "model.latent_dim",
    "param_shape": "the likelihood",
    "encode": "the encoder and posterior",
    "seed": "the top-level `seed`",
}
WIRING: frozenset[str] = frozenset(WIRING_SOURCES)


@dataclass(frozen=True)
class Kind:
    """One kind of registered class.

    Attributes:
        name: the config group and the word users type (``encoder=conv``).
        plural: for listings and messages.
        base: ``module:Class`` every registered class of this kind subclasses.
        wiring: constructor arguments genkit supplies; every other one is user config.
        part: a model part (built into the model from the data's spec).
    """

    name: str
    plural: str
    base: str
    wiring: frozenset[str] = WIRING
    part: bool = True


#: Every kind, in the order genkit builds them: the data first (it knows the spec), the likelihood
#: (it knows what the decoder must output), encoder, posterior, prior, decoder, then the model.
KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("data", "data", "genkit.data.base:DataModule", part=False),
        Kind("likelihood", "likelihoods", "genkit.parts:Likelihood"),
        Kind("encoder", "encoders", "genkit.parts:Encoder"),
        Kind("posterior", "posteriors", "genkit.parts:Posterior"),
        Kind("prior", "priors", "genkit.parts:Prior"),
        Kind("decoder", "decoders", "genkit.parts:Decoder"),
        Kind(
            "model",
            "models",
            "genkit.model:VAE",
            wiring=frozenset({"encoder", "posterior", "prior", "decoder", "likelihood", "spec", "optimization"}),
            part=False,
        ),
    )
}
#: The model parts, in build order.
PART_KINDS: tuple[str, ...] = tuple(name for name, kind in KINDS.items() if kind.part)
PLURALS = {name: kind.plural for name, kind in KINDS.items()}
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")

T = TypeVar("T", bound=type)


@dataclass
class Entry:
    """One registered class."""

    kind: str
    name: str
    cls: type
    origin: str
    config: Any  # the generated dataclass config node
    overrides: str | None = None  # origin of the entry this one replaced

    @property
    def target(self) -> str:
        return f"{self.cls.__module__}.{self.cls.__qualname__}"

    def parameters(self) -> dict[str, Any]:
        """User parameters with their defaults, read from the generated config node."""
        node = self.config()
        values = {f.name: getattr(node, f.name) for f in fields(node) if not f.name.startswith("_")}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


@dataclass
class Registry:
    """All registered classes of one kind, by name."""

    kind: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self.entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted(self.entries)

    def get(self, name: str) -> Entry:
        """The entry called ``name``; unknown names list the choices and a did-you-mean."""
        try:
            return self.entries[name]
        except KeyError:
            raise UnknownPartError(unknown_name_message(self.kind, name, self.choices())) from None

    def choices(self) -> dict[str, str]:
        """name -> origin, for messages."""
        return {e.name: e.origin for e in self}

    def by_target(self, target: str) -> Entry:
        """The entry whose class is ``target`` (the allow-list behind safe loading); a class path
        written by an earlier genkit, before its module moved, finds the class where it is now."""
        for candidate in (target, *legacy_targets(target)):
            for entry in self.entries.values():
                if entry.target == candidate:
                    return entry
        raise UnknownPartError(
            f"{target!r} is not a registered {self.kind}: genkit only builds registered parts. "
            f"Registered {PLURALS[self.kind]}: {', '.join(self.names())}. If it comes from a plugin, "
            "install the plugin package (or list its module in plugins=[...])."
        )


def unknown_name_message(kind: str, name: str, choices: dict[str, str]) -> str:
    """'no encoder named "convv". Did you mean "conv"? encoders: conv, mlp (genkit); ...'."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    by_origin: dict[str, list[str]] = {}
    for choice, origin in sorted(choices.items()):
        by_origin.setdefault(origin, []).append(choice)
    listing = "; ".join(f"{', '.join(names)} ({origin})" for origin, names in by_origin.items())
    return (
        f"no {kind} named {name!r}.{hint} Available {PLURALS[kind]}: {listing or 'none'}. "
        "See them all with `genkit list`; write your own as a plugin (README, 'Writing a part')."
    )


_REGISTRIES: dict[str, Registry] = {kind: Registry(kind) for kind in KINDS}


def registry(kind: str) -> Registry:
    """The registry of ``kind`` (one of ``KINDS``), genkit's built-in classes registered."""
    found = kind_registry(kind)
    plugins.load_builtins()
    return found


def kind_registry(kind: str) -> Registry:
    """The registry of ``kind`` as it stands (registration itself must not import the built-ins)."""
    if kind not in _REGISTRIES:
        raise UnknownPartError(f"no kind of part called {kind!r}; kinds are {', '.join(KINDS)}")
    return _REGISTRIES[kind]


@cache
def base_class(kind: str) -> type:
    module, _, attr = KINDS[kind].base.partition(":")
    return getattr(importlib.import_module(module), attr)


def origin_of(module_name: str) -> str:
    """The distribution that provides ``module_name`` ('genkit', 'genkit-flows'), else 'local:<module>'."""
    top = module_name.split(".")[0]
    if top == "genkit":
        return "genkit"
    dists = _distributions_by_package().get(top)
    return dists[0] if dists else f"local:{module_name}"


@cache
def _distributions_by_package() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


def check_signature(kind: str, cls: type) -> None:
    """Refuse classes whose constructor cannot be configured from the command line."""
    base = base_class(kind)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PartDefinitionError(
            f"{cls!r} cannot be registered as a {kind}: it must subclass {KINDS[kind].base.replace(':', '.')}"
        )
    if "<locals>" in cls.__qualname__:
        raise PartDefinitionError(
            f"{cls.__qualname__} cannot be registered: define it at module level, so its config's "
            "_target_ can import it"
        )
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise PartDefinitionError(f"{cls.__qualname__} cannot be registered as a {kind}: implement {missing}")
    wiring = KINDS[kind].wiring
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.name == "self" or param.name in wiring:
            continue
        problems = []
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            problems.append("keyword-only (put it after `*`)")
        if param.annotation is inspect.Parameter.empty:
            problems.append("annotated with a type")
        if param.default is inspect.Parameter.empty:
            problems.append("given a default")
        if problems:
            raise PartDefinitionError(
                f"{cls.__qualname__}.__init__ parameter {param.name!r} must be {' and '.join(problems)}: "
                f"every parameter except the wiring arguments ({', '.join(sorted(wiring))}) is user config"
            )


def register(kind: str, name: str, *, override: bool = False) -> Callable[[T], T]:
    """Decorator registering a class of ``kind`` under ``name``.

    Args:
        kind: one of ``KINDS``.
        name: what users type, lower_snake (``conv``, ``vamp``).
        override: replace an existing entry of that name on purpose.

    Raises:
        DuplicatePartError: the name is taken and ``override`` is False.
        PartDefinitionError: the class is not a proper part of that kind.
    """
    reg = kind_registry(kind)
    if not NAME_PATTERN.match(name):
        raise PartDefinitionError(f"part name {name!r} must be lower_snake_case ([a-z][a-z0-9_]*)")

    def decorator(cls: T) -> T:
        check_signature(kind, cls)
        origin = origin_of(cls.__module__)
        previous = reg.entries.get(name)
        replaced = None
        if previous is not None and previous.target != f"{cls.__module__}.{cls.__qualname__}":
            if not override:
                raise DuplicatePartError(
                    f"{kind} {name!r} from {origin} ({cls.__module__}) clashes with the one from "
                    f"{previous.origin} ({previous.target}). Choose another name, or pass "
                    f"override=True to replace it on purpose."
                )
            replaced = previous.origin
        node = config.generated_node(cls, f"{kind}_{name}", exclude=KINDS[kind].wiring)
        reg.entries[name] = Entry(kind, name, cls, origin, node, replaced)
        config.store(group=kind, name=name, node=node, provider=origin)
        return cls

    return decorator


def register_data(name: str, *, override: bool = False) -> Callable[[T], T]:
    """Register a data module (a ``genkit.DataModule`` subclass)."""
    return register("data", name, override=override)


def register_encoder(name: str, *, override: bool = False) -> Callable[[T], T]:
    """Register an encoder (a ``genkit.Encoder`` subclass)."""
    return register("encoder", name, override=override)


def register_posterior(name: str, *, override: bool = False) -> Callable[[T], T]:
    """Register a posterior head (a ``genkit.Posterior`` subclass)."""
    return register("posterior", name, override=override)


def register_prior(name: str, *, override: bool = False) -> Callable[[T], T]:
    """Register a prior (a ``genkit.Prior`` subclass)."""
    return register("prior", name, override=override)


def register_decoder(name: str, *, override: bool = False) -> Callable[[T], T]:
    """Register a decoder (a ``genkit.Decoder`` subclass)."""
    return register("decoder", name, override=override)


def register_likelihood(name: str, *, override: bool = False) -> Callable[[T], T]:
    """Register a likelihood (a ``genkit.Likelihood`` subclass)."""
    return register("likelihood", name, override=override)


def register_model(name: str, *, override: bool = False) -> Callable[[T], T]:
    """Register a model (a ``genkit.VAE`` subclass, e.g. with another objective)."""
    return register("model", name, override=override)


def list_parts(kind: str | None = None, pattern: str = "*") -> list[Entry]:
    """Registered entries, optionally of one kind and matching an fnmatch ``pattern``."""
    kinds = [kind] if kind else list(KINDS)
    return [e for k in kinds for e in registry(k) if fnmatch.fnmatch(e.name, pattern)]
