"""``compose``: a config in, a data module and a ``VAE`` out, built top-down.

data -> likelihood -> encoder -> posterior -> prior -> decoder -> VAE. Every part is
resolved through the registry (an allow-list: a config can only name registered
classes), compatibility is checked for every pair before anything is built, and the
shapes are wired by parameter name, so no config repeats a number another part knows.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from genkit.contract import verify
from genkit.errors import IncompatiblePartsError, PartConfigError, WiringError
from genkit.model import VAE, LearningRateSchedule
from genkit.parts import WIRING
from genkit.registry import PLURALS, Entry, registry
from genkit.spec import DataSpec

#: Where each wiring argument comes from, for messages.
WIRING_SOURCES = {
    "spec": "the data module",
    "in_features": "the encoder's out_features",
    "latent_dim": "model.latent_dim",
    "param_shape": "the likelihood",
    "encode": "the encoder and posterior",
    "seed": "the top-level `seed`",
}
PART_KINDS = ("likelihood", "encoder", "posterior", "prior", "decoder")
#: The preset that chooses fitting parts for data whose modality the default parts do not serve.
MODALITY_PRESETS = {"text": "experiment=text"}
MODEL_EXCLUDE = ("encoder", "posterior", "prior", "decoder", "likelihood", "spec", "optimizer", "schedule")


class Encode:
    """``x -> q(z|x)`` through the model's encoder and posterior: the hook priors such as the
    VampPrior receive. A plain object, not a Module, so the parameters are not registered twice;
    picklable, unlike a closure, so models survive deepcopy and process spawning."""

    def __init__(self, encoder: Any, posterior: Any) -> None:
        self.encoder, self.posterior = encoder, posterior

    def __call__(self, x: Any) -> Any:
        return self.posterior(self.encoder(x))


def model_config() -> Any:
    """The ``model/vae`` node, generated from ``VAE``'s signature like every part's."""
    from hydra_zen import builds

    return builds(
        VAE,
        populate_full_signature=True,
        zen_partial=True,
        zen_exclude=MODEL_EXCLUDE,
        zen_dataclass={"cls_name": "model_vae"},
    )


def entry_for(kind: str, node: DictConfig | dict) -> Entry:
    """The registry entry a config node names (by ``_target_``)."""
    target = node.get("_target_") if node is not None else None
    if not target:
        raise PartConfigError(f"the {kind} config has no _target_; choose one with {kind}=NAME")
    return registry(kind).by_target(target)


def user_params(kind: str, node: DictConfig | dict, wired: frozenset[str] = WIRING) -> dict[str, Any]:
    """A node's user parameters as plain Python, refusing values for ``wired`` arguments."""
    params = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    params = {k: v for k, v in params.items() if not k.startswith("_")}
    for key in params.keys() & wired:
        raise WiringError(
            f"{kind}.{key} is wired by genkit from {WIRING_SOURCES[key]}; remove it from the {kind} config"
            + (" and set model.latent_dim instead" if key == "latent_dim" else "")
        )
    return params


def build_part(kind: str, node: DictConfig | dict, wiring: dict[str, Any]) -> Any:
    """Construct the registered part a node names, passing the wiring arguments it declares."""
    entry = entry_for(kind, node)
    params = user_params(kind, node)
    declared = inspect.signature(entry.cls.__init__).parameters
    wired = {k: v for k, v in wiring.items() if k in declared}
    try:
        return entry.cls(**wired, **params)
    except (TypeError, ValueError, RuntimeError) as error:  # RuntimeError: torch refusing a layer size
        raise PartConfigError(f"{kind} {entry.name!r} ({entry.origin}) refused its configuration: {error}") from error


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


def build_model(cfg: DictConfig, spec: DataSpec, data_name: str = "(from checkpoint)") -> VAE:
    """Build the VAE for data described by ``spec`` (no data needs to be present), and check
    every part against its contract on a probe batch (``genkit.contract.verify``)."""
    entries = {kind: entry_for(kind, cfg[kind]) for kind in PART_KINDS}
    check_compatible(entries, data_name, spec)
    model_params = user_params("model", cfg.model, wired=frozenset(MODEL_EXCLUDE))
    latent_dim = int(model_params["latent_dim"])
    if latent_dim < 1:
        raise PartConfigError(f"model.latent_dim must be at least 1, got {latent_dim}")
    wiring: dict[str, Any] = {"spec": spec, "latent_dim": latent_dim, "seed": cfg.get("seed", 0)}
    likelihood = build_part("likelihood", cfg.likelihood, wiring)
    encoder = build_part("encoder", cfg.encoder, wiring)
    posterior = build_part("posterior", cfg.posterior, {**wiring, "in_features": encoder.out_features})
    prior = build_part("prior", cfg.prior, {**wiring, "encode": Encode(encoder, posterior)})
    decoder = build_part("decoder", cfg.decoder, {**wiring, "param_shape": likelihood.param_shape})
    try:
        model = VAE(
            encoder, posterior, prior, decoder, likelihood, spec, optimizer_factory(cfg), schedule(cfg), **model_params
        )
    except (TypeError, ValueError) as error:
        raise PartConfigError(f"the model configuration was refused: {error}") from error
    if model.schedule is not None and model.schedule.monitor not in model.epoch_metrics():
        raise PartConfigError(
            f"scheduler.monitor {model.schedule.monitor!r} is not a metric this model logs; "
            f"choose one of {', '.join(model.epoch_metrics())}"
        )
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    verify(model)
    return model


def torch_factory(group: str, node: Any, module: str, probe: Callable[[], Any]) -> Any:
    """``node`` as a partial of a class from the torch module ``module`` (the only classes
    allowed), called once on ``probe()`` so that bad arguments fail now, not when training starts."""
    target = str(node.get("_target_", ""))
    if not target.startswith(f"{module}."):
        raise PartConfigError(f"{group}._target_ must be a {module} class, got {target!r}")
    from hydra.utils import instantiate

    factory = instantiate(node, _partial_=True)
    try:
        factory(probe())
    except (TypeError, ValueError, KeyError) as error:
        raise PartConfigError(f"{group} {target} refused its configuration: {error}") from error
    return factory


def probe_parameters() -> list[Any]:
    """One parameter to try an optimiser's arguments on."""
    import torch

    return [torch.nn.Parameter(torch.zeros(1))]


#: Lightning precisions that run a gradient scaler (``16-mixed``) or autocast (``bf16-mixed``).
MIXED_PRECISIONS = frozenset({"16-mixed", "bf16-mixed", "16", "bf16"})


def optimizer_factory(cfg: DictConfig) -> Any:
    """The ``optim`` node as ``params -> Optimizer``; only ``torch.optim`` classes are built.

    Unless the node chooses (``fused`` or ``foreach``), a class with a fused implementation
    (Adam, AdamW, SGD, Adagrad) gets it: one kernel for the whole step, on CPU about three
    times faster than ``foreach`` for small models. Lightning cannot clip gradients that a
    fused step unscales itself, so with ``trainer.gradient_clip_val`` under a mixed
    precision the grouped ``foreach`` implementation is used instead.
    """
    node = cfg.get("optim")
    if node is None:
        return None
    if "fused" not in node and "foreach" not in node:
        import torch

        cls = getattr(torch.optim, str(node.get("_target_", "")).removeprefix("torch.optim."), None)
        if isinstance(cls, type) and "fused" in inspect.signature(cls).parameters:
            trainer = cfg.get("trainer") or {}
            clipped_amp = trainer.get("gradient_clip_val") and str(trainer.get("precision")) in MIXED_PRECISIONS
            implementation = {"foreach": True} if clipped_amp else {"fused": True}
            node = OmegaConf.create({**OmegaConf.to_container(node, resolve=True), **implementation})
    return torch_factory("optim", node, "torch.optim", probe_parameters)


#: When Lightning may step a learning-rate scheduler.
SCHEDULE_INTERVALS = ("epoch", "step")


def schedule(cfg: DictConfig) -> LearningRateSchedule | None:
    """The ``scheduler`` node as a ``LearningRateSchedule``; only ``torch.optim.lr_scheduler``
    classes are built. ``interval`` and ``monitor`` are genkit's keys, the rest the class's."""
    node = cfg.get("scheduler")
    if node is None:
        return None
    import torch

    arguments = OmegaConf.to_container(node, resolve=True)
    interval, monitor = arguments.pop("interval", "epoch"), arguments.pop("monitor", "val/nelbo")
    if interval not in SCHEDULE_INTERVALS:
        raise PartConfigError(f"scheduler.interval must be epoch or step, got {interval!r}")
    factory = torch_factory(
        "scheduler", arguments, "torch.optim.lr_scheduler", lambda: torch.optim.SGD(probe_parameters(), lr=1.0)
    )
    if interval == "step" and factory.func is torch.optim.lr_scheduler.ReduceLROnPlateau:
        raise PartConfigError(
            "scheduler ReduceLROnPlateau watches an epoch metric (scheduler.monitor); use scheduler.interval=epoch"
        )
    return LearningRateSchedule(factory, interval, monitor)


def build_data(cfg: DictConfig) -> tuple[Any, str]:
    """The data module and its registry name."""
    entry = entry_for("data", cfg.data)
    return build_part("data", cfg.data, {"seed": cfg.get("seed", 0)}), entry.name


def train_config(overrides: Sequence[str] = (), plugin_modules: Sequence[str] = ()) -> DictConfig:
    """genkit-train's config with ``overrides``, composed as the command line would (no run started)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from genkit import plugins

    plugins.load(list(plugin_modules))
    with initialize_config_dir(config_dir=str(plugins.config_dir()), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides))


def compose(cfg: DictConfig) -> tuple[Any, VAE]:
    """Build the data module, then the VAE wired to its spec.

    Raises:
        GenkitError: an unknown or incompatible part, a wired value set by hand, or a
            value a part refuses; all before any data is read or training starts.
    """
    datamodule, data_name = build_data(cfg)
    return datamodule, build_model(cfg, datamodule.spec, data_name)
