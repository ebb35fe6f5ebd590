"""``compose``: a config in, a data module and a model out, built top-down.

data -> likelihood -> encoder -> posterior -> prior -> decoder -> model (``registry.KINDS``
order). Every class is resolved through the registry (an allow-list: a config can only name
registered classes), compatibility is checked for every part before anything is built, and
the shapes are wired by parameter name, so no config repeats a number another part knows.
"""

from __future__ import annotations

import inspect
import math
import typing
import warnings
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from genkit.errors import GenkitError, IncompatiblePartsError, PartConfigError, UsageError, WiringError
from genkit.parts.base import verify
from genkit.registry import KINDS, PART_KINDS, PLURALS, WIRING_SOURCES, Entry, registry
from genkit.spec import DataSpec
from genkit.training.optimization import Optimization

#: The preset that chooses fitting parts for data whose modality the default parts do not serve.
MODALITY_PRESETS = {"text": "experiment=text"}
#: The model a config without a ``model._target_`` builds (configs written by hand in Python).
DEFAULT_MODEL = "vae"


def entry_for(kind: str, node: DictConfig | dict) -> Entry:
    """The registry entry a config node names (by ``_target_``)."""
    target = node.get("_target_") if node is not None else None
    if not target:
        if kind == "model":
            return registry(kind).get(DEFAULT_MODEL)
        raise PartConfigError(f"the {kind} config has no _target_; choose one with {kind}=NAME")
    return registry(kind).by_target(target)


def user_params(kind: str, node: DictConfig | dict) -> dict[str, Any]:
    """A node's user parameters as plain Python, refusing values for the kind's wired arguments and
    NaN or infinite numbers (no part option means anything by them, and they would surface only as
    a NaN loss later, blamed on the learning rate)."""
    params = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    params = {k: v for k, v in params.items() if not k.startswith("_")}
    for key, value in params.items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise PartConfigError(f"{kind}.{key} must be a finite number, got {value}")
    for key in params.keys() & KINDS[kind].wiring:
        source = WIRING_SOURCES.get(key, "the parts genkit builds")
        raise WiringError(
            f"{kind}.{key} is wired by genkit from {source}; remove it from the {kind} config"
            + (" and set model.latent_dim instead" if key == "latent_dim" else "")
        )
    return params


#: What a value of each plain annotated type may be (bool is an int to Python, not to a user), and its name.
PLAIN_TYPES = {
    int: ((int,), "a whole number"),
    float: ((int, float), "a number"),
    bool: ((bool,), "true or false"),
    str: ((str,), "text"),
}


def check_types(kind: str, cls: type, params: dict[str, Any]) -> None:
    """Refuse values of the wrong plain type for the constructor's annotated ``int``/``float``/``bool``/
    ``str`` parameters: a config merged without the generated schema (a tool's ``data.*`` changes, a
    hand-written node) would otherwise hand ``batch_size=1e6`` to code that needs a whole number."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # annotations this module cannot resolve: the constructor checks for itself
        return
    for key, value in params.items():
        if value is None or hints.get(key) not in PLAIN_TYPES:
            continue
        allowed, meaning = PLAIN_TYPES[hints[key]]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise PartConfigError(f"{kind}.{key} must be {meaning}, got {value!r}")


def build_part(kind: str, node: DictConfig | dict, wiring: dict[str, Any]) -> Any:
    """Construct the registered class a node names, passing the wiring arguments it declares."""
    entry = entry_for(kind, node)
    params = user_params(kind, node)
    check_types(kind, entry.cls, params)
    declared = inspect.signature(entry.cls.__init__).parameters
    wired = {k: v for k, v in wiring.items() if k in declared}
    try:
        with warnings.catch_warnings():  # a layer of size 0 is refused below, with the option named
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            part = entry.cls(**wired, **params)
    except GenkitError:  # already one clear message (a DataError is also a ValueError)
        raise
    except (TypeError, ValueError, RuntimeError) as error:  # RuntimeError: torch refusing a layer size
        raise PartConfigError(f"{kind} {entry.name!r} ({entry.origin}) refused its configuration: {error}") from error
    check_no_empty_layers(kind, entry, part, params)
    return part


def check_no_empty_layers(kind: str, entry: Entry, part: Any, params: dict[str, Any]) -> None:
    """Refuse a part built with a parameter of no elements: a 0 among its sizes (``hidden=[0]``)
    builds a layer of no units, which torch accepts and which trains a model that ignores its
    input (or fails later, far from the option)."""
    empty = [name for name, p in part.named_parameters() if p.numel() == 0] if isinstance(part, nn.Module) else []
    if not empty:
        return
    zeros = [
        f"{kind}.{k}={v}"
        for k, v in params.items()
        if is_zero(v) or (isinstance(v, list) and any(is_zero(x) for x in v))
    ]
    raise PartConfigError(
        f"{kind} {entry.name!r} ({entry.origin}) built a layer of size 0 (parameter {empty[0]} has no elements)"
        + (f", from {', '.join(zeros)}" if zeros else "")
        + "; sizes must be at least 1"
    )


def is_zero(value: Any) -> bool:
    """A whole-number 0 (not ``False``, not ``0.0``: a rate or probability of 0 is no size)."""
    return isinstance(value, int) and not isinstance(value, bool) and value == 0


def check_compatible(entries: dict[str, Entry], data_name: str, spec: DataSpec) -> None:
    """Fail before building anything when a chosen part cannot serve the data."""
    for kind, entry in entries.items():
        reason = entry.cls.incompatibility(spec)
        if reason is None:
            continue
        fits = [e.name for e in registry(kind) if e.cls.incompatibility(spec) is None]
        preset = MODALITY_PRESETS.get(spec.modality)
        raise IncompatiblePartsError(
            f"{kind} {entry.name!r} cannot be used with data {data_name!r}: it {reason}. "
            f"{PLURALS[kind].capitalize()} that fit this data: {', '.join(fits) or 'none registered'}."
            + (f" {preset} sets fitting parts for all kinds." if preset else "")
        )


def build_model(
    cfg: DictConfig, spec: DataSpec, data_name: str = "(from checkpoint)", optimization: Optimization | None = None
) -> Any:
    """Build the model for data described by ``spec`` (no data needs to be present), and check
    every part against its contract on a probe batch (``genkit.parts.base.verify``).

    Each part gets the wiring of the ones built before it (``Part.wires``): the likelihood's
    ``param_shape`` for the decoder, the encoder's ``out_features`` for the posterior, the
    encoder and posterior as ``encode`` for the prior.
    """
    check_compatible({kind: entry_for(kind, cfg[kind]) for kind in PART_KINDS}, data_name, spec)
    model_params = user_params("model", cfg.model)
    latent_dim = int(model_params.get("latent_dim", 1))
    if latent_dim < 1:
        raise PartConfigError(f"model.latent_dim must be at least 1, got {latent_dim}")
    optimization = optimization or Optimization.from_config(cfg)
    wiring: dict[str, Any] = {"spec": spec, "latent_dim": latent_dim, "seed": cfg.get("seed", 0)}
    parts: dict[str, Any] = {}
    for kind in PART_KINDS:
        parts[kind] = build_part(kind, cfg[kind], wiring)
        wiring.update(parts[kind].wires(parts))
    model = build_part("model", cfg.model, {**parts, "spec": spec, "optimization": optimization})
    schedule = model.optimization.schedule
    if schedule is not None and schedule.monitor not in model.metrics.epoch_metrics():
        raise PartConfigError(
            f"scheduler.monitor {schedule.monitor!r} is not a metric this model logs; "
            f"choose one of {', '.join(model.metrics.epoch_metrics())}"
        )
    objective = cfg.get("objective", "val/nelbo")
    if objective not in model.metrics.epoch_metrics():
        raise UsageError(
            f"objective {objective!r} is not a metric this model logs; choose one of "
            f"{', '.join(model.metrics.epoch_metrics())}"
        )
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    verify(model)
    return model


def build_data(cfg: DictConfig) -> tuple[Any, str]:
    """The data module and its registry name."""
    entry = entry_for("data", cfg.data)
    return build_part("data", cfg.data, {"seed": cfg.get("seed", 0)}), entry.name


def compose(cfg: DictConfig) -> tuple[Any, Any]:
    """Build the data module, then the model wired to its spec.

    Raises:
        GenkitError: an unknown or incompatible part, a wired value set by hand, or a
            value a part refuses; all before any data is read or training starts.
    """
    optimization = Optimization.from_config(cfg)  # the cheapest checks first: no data is read yet
    datamodule, data_name = build_data(cfg)
    return datamodule, build_model(cfg, datamodule.spec, data_name, optimization)
