"""Checks for plugin authors: ``check_part("encoder", "my_encoder")`` in a pytest test.

``check_part`` goes through what ``genkit-train encoder=my_encoder`` would: it composes
genkit's real Hydra config with the part swapped in (installed and local plugins
loaded, the part's generated config and any YAML presets used), builds the model on
real data, checks every part's contract (``genkit.contract.verify``), takes
optimiser steps on real batches, samples and reconstructs, and reloads the model from
its stored config. Any failure raises ``PartContractError`` saying what to fix. The contracts
themselves, and the probe every composition runs, are in ``genkit.parts.base``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from genkit import plugins
from genkit.compose import build_data, build_model, compose, entry_for
from genkit.config import train_config
from genkit.errors import DataNotFoundError, GenkitError, IncompatiblePartsError, PartContractError
from genkit.model import VAE
from genkit.parts.base import describe
from genkit.registry import KINDS, PART_KINDS, registry
from genkit.spec import DataSpec


def probe_part(kind: str, name: str) -> tuple[str, str]:
    """Build a model around a registered model part on the default data module, else the first
    registered one it fits, with the default other parts or, where those cannot serve that data,
    the first registered ones that can; no data is read (``DataModule.probe_spec``). Returns
    ``(status, detail)``: ``("ok", data name)``, ``("broken", the error)`` or ``("unchecked", why)``.
    This is what ``genkit list --check`` shows.
    """
    default = registry("data").by_target(train_config().data._target_).name
    for data in [default, *(d for d in registry("data").names() if d != default)]:
        try:
            cfg = train_config([f"data={data}", f"{kind}={name}"])
            datamodule, data_name = build_data(cfg)
            spec = type(datamodule).probe_spec() or datamodule.spec
            if entry_for(kind, cfg[kind]).cls.incompatibility(spec) is not None:
                continue
            cfg = train_config([f"data={data}", f"{kind}={name}", *fitting_parts(cfg, spec, kind)])
            build_model(cfg, spec, data_name)
        except (IncompatiblePartsError, DataNotFoundError):  # DataNotFoundError: a spec that needs data (shards)
            continue
        except GenkitError as error:
            return "broken", str(error)
        return "ok", data
    return "unchecked", "no registered data module fits it together with the other registered parts"


def fitting_parts(cfg: DictConfig, spec: DataSpec, keep: str) -> list[str]:
    """Overrides replacing each configured part (but ``keep``) that cannot serve ``spec`` by the
    first registered one that can."""
    overrides = []
    for kind in PART_KINDS:
        if kind == keep or entry_for(kind, cfg[kind]).cls.incompatibility(spec) is None:
            continue
        fits = [entry.name for entry in registry(kind) if entry.cls.incompatibility(spec) is None]
        if fits:
            overrides.append(f"{kind}={fits[0]}")
    return overrides


def check_part(
    kind: str,
    name: str,
    *,
    data: str = "digits",
    overrides: Sequence[str] = (),
    plugin_modules: Sequence[str] = (),
    steps: int = 2,
) -> VAE:
    """Check the registered part ``kind``/``name`` end to end and return the trained model.

    Args:
        kind: ``encoder``, ``posterior``, ``prior``, ``decoder``, ``likelihood``, ``data`` or ``model``.
        name: its registered name.
        data: the data module to test on (ignored when ``kind`` is ``data``); the default
            is scikit-learn's digits, which ship with scikit-learn (no download).
        overrides: more Hydra overrides (``"encoder.width=32"``, ``"decoder=conv"``...).
        plugin_modules: local plugin modules to import first (as ``plugins=[...]``).
        steps: optimiser steps to take on real training batches.

    Raises:
        PartContractError: the part is unknown, breaks its contract, gets no gradient, or
            does not come back identical from its stored config.
    """
    if kind not in KINDS:
        raise PartContractError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    plugins.load(list(plugin_modules))
    registry(kind).get(name)  # unknown names fail here, with the choices
    data_choice = name if kind == "data" else data
    cfg = train_config([f"data={data_choice}", f"{kind}={name}", *overrides], plugin_modules)
    torch.manual_seed(int(cfg.seed))
    datamodule, model = compose(cfg)  # contracts checked here
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    optimizer = model.optimization.optimizer(model.parameters())
    part = getattr(model, kind) if KINDS[kind].part else model
    who = describe(kind, part) if KINDS[kind].part else f"{kind} {name!r}"
    batches = iter(())
    for _ in range(steps):
        batch = next(batches, None) or next(batches := iter(loader), None)
        if batch is None:
            raise PartContractError(f"{who}: the training split gives no batch (fewer examples than one batch?)")
        optimizer.zero_grad()
        loss = model.loss(model.elbo_terms(batch["x"], batch.get("mask")), beta=1.0)
        if not torch.isfinite(loss):
            raise PartContractError(f"{who}: the training loss is {loss.item()} on a real batch")
        loss.backward()
        starved = [n for n, p in part.named_parameters() if p.requires_grad and p.grad is None]
        if starved:
            raise PartContractError(
                f"{who}: parameters {', '.join(starved)} get no gradient from the loss; use them in forward "
                "or register them with requires_grad=False (or as buffers)"
            )
        optimizer.step()
    check_use(model, batch, who)
    check_reload(model, batch, who)
    return model


def check_use(model: VAE, batch: dict[str, torch.Tensor], who: str) -> None:
    """Sampling and reconstruction give examples shaped like the data (generated sequences: at
    most the data's length)."""
    event = tuple(model.spec.event_shape)
    x, mask = batch["x"][:4], batch.get("mask")
    mask = None if mask is None else mask[:4]
    for what, value in (("sample(4)", model.sample(4)), ("reconstruct(x)", model.reconstruct(x, mask))):
        shape = tuple(value.shape)
        if model.decoder.autoregressive:
            fits = len(shape) == 1 + len(event) and shape[0] == 4 and 1 <= shape[1] <= event[0]
        else:
            fits = shape == (4, *event)
        if not fits:
            raise PartContractError(f"{who}: {what} gave shape {list(value.shape)}, expected {[4, *event]}")


def check_reload(model: VAE, batch: dict[str, torch.Tensor], who: str) -> None:
    """The model rebuilt from its stored config loads the weights and computes the same bound."""
    rebuilt = build_model(OmegaConf.create(model.run_config), model.spec)
    try:
        rebuilt.load_state_dict(model.state_dict())
    except RuntimeError as error:
        raise PartContractError(
            f"{who}: the model rebuilt from its config does not take the trained weights "
            f"({str(error).splitlines()[0]}); keep all state in parameters and buffers created in __init__"
        ) from error
    bounds = []
    for candidate in (model, rebuilt):
        candidate.eval()
        torch.manual_seed(0)
        with torch.no_grad():
            bounds.append(candidate.elbo_terms(batch["x"], batch.get("mask")).nelbo)
    if not torch.allclose(*bounds, rtol=1e-5, atol=1e-5):
        raise PartContractError(
            f"{who}: the model rebuilt from its stored config computes a different bound; state outside "
            "parameters and buffers (or randomness not drawn from torch) is lost when a checkpoint is loaded"
        )
