"""Checkpoints: read safely, turned back into models without the original
config files, and what genkit keeps in them besides weights (the run's config, the data spec,
the random state)."""

from __future__ import annotations

import importlib
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from genkit._moved import legacy_targets
from genkit.errors import CheckpointError
from genkit.spec import DataSpec
from genkit.version import __version__

if TYPE_CHECKING:
    from genkit.model import VAE


def local_checkpoint(ckpt: str | Path) -> Path:
    """The checkpoint file ``ckpt`` names: a path, or ``wandb:ENTITY/PROJECT/NAME:ALIAS`` (a W&B model
    artifact, downloaded once into ``~/.cache/genkit/models``).

    Raises:
        CheckpointError: a ``wandb:`` reference W&B cannot resolve (the message says why).
    """
    from genkit import wandb_models

    return wandb_models.download(str(ckpt)) if wandb_models.is_reference(ckpt) else Path(ckpt)


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], DictConfig]:
    """The checkpoint's contents and its run config, read with ``weights_only=True``; ``path`` may
    be a ``wandb:`` reference (``local_checkpoint``).

    Raises:
        CheckpointError: the file is missing, unreadable, or not a genkit checkpoint.
    """
    path = local_checkpoint(path)
    if path.is_dir():
        inside = sorted(str(p) for p in path.rglob("*.ckpt"))[:3]
        raise CheckpointError(
            f"checkpoint {path} is a folder; give a checkpoint file"
            + (f", e.g. {', '.join(inside)}" if inside else " (it holds no .ckpt files)")
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # torch's advice (weights_only=False) would run the file's code
        refused = re.search(r"GLOBAL (\S+) (?:was not an allowed|whose module)", str(error))
        raise CheckpointError(
            f"checkpoint {path} cannot be read: it holds objects other than tensors and plain values"
            + (f" ({refused.group(1)})" if refused else "")
            + ". genkit never runs code from a file, so only checkpoints genkit-train wrote load"
        ) from error
    except Exception as error:  # a file that is not a checkpoint fails in the unpickler in many ways
        reason = str(error).split(". ")[0]
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({error.__class__.__name__}: {reason}): "
            "it is damaged or not a PyTorch checkpoint"
        ) from error
    meta = checkpoint.get("genkit") if isinstance(checkpoint, dict) else None
    if not meta:
        raise CheckpointError(f"{path} is not a genkit checkpoint (no 'genkit' section with the run's config)")
    if "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a genkit checkpoint (no model weights, 'state_dict')")
    return checkpoint, OmegaConf.create(upgrade_config(meta["config"]))


#: What a run config written before a key existed meant by its absence.
ADDED_KEYS = {"objective": "val/nelbo"}
#: Nodes whose ``_partial_: true`` genkit 0.1 wrote, though composition makes them partial anyway.
PARTIAL_NODES = ("optim", "scheduler")


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run config stored by an earlier genkit, as this one writes it: class paths of modules that
    moved point where the classes are now, keys added since hold what their absence meant, and
    keys no longer written are gone."""

    def upgraded(node: Any) -> Any:
        if isinstance(node, dict):
            node = {key: upgraded(value) for key, value in node.items()}
            if isinstance(node.get("_target_"), str):
                node["_target_"] = current_target(node["_target_"])
            return node
        return [upgraded(value) for value in node] if isinstance(node, list) else node

    config = upgraded(config)
    if "model" not in config:  # not a training run's config
        return config
    for name in PARTIAL_NODES:
        if isinstance(config.get(name), dict):
            config[name] = {key: value for key, value in config[name].items() if key != "_partial_"}
    return {**{key: value for key, value in ADDED_KEYS.items() if key not in config}, **config}


def current_target(target: str) -> str:
    """Where a class named by an old path lives now (``genkit.encoders.MLPEncoder`` ->
    ``genkit.parts.encoders.MLPEncoder``); other paths as they are. Only genkit's own modules are imported."""
    for candidate in legacy_targets(target):
        module, _, name = candidate.rpartition(".")
        if hasattr(importlib.import_module(module), name):
            return candidate
    return target


def rng_states() -> dict[str, Any]:
    """torch's CPU and CUDA generator states (tensors: checkpoints stay ``weights_only``-loadable)."""
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def load(path: str | Path) -> VAE:
    """The trained ``VAE`` stored in a genkit checkpoint, on the CPU, in eval mode; ``path`` may be a
    W&B model reference, ``wandb:ENTITY/PROJECT/NAME:ALIAS``.

    No code from the file runs (``weights_only=True``), and the stored config may only
    name registered parts: the registry is an allow-list.

    Raises:
        CheckpointError: the file is missing, unreadable, not a genkit checkpoint, or its
            parameters do not fit the parts as this genkit version builds them.
    """
    checkpoint, cfg = read_checkpoint(path)
    return model_from_checkpoint(checkpoint, cfg, path)


def model_from_checkpoint(checkpoint: dict[str, Any], cfg: DictConfig, path: str | Path) -> VAE:
    """Build the model a read checkpoint describes and load its weights (see ``load``)."""
    from genkit import plugins
    from genkit.compose import build_model

    plugins.load(list(cfg.get("plugins") or []))
    model = build_model(cfg, DataSpec.from_dict(checkpoint["genkit"]["spec"]))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        written = checkpoint["genkit"].get("version", "unknown")
        raise CheckpointError(
            f"{path} was written by genkit {written}; its parameters do not fit the parts genkit {__version__} "
            f"builds from its config: {str(error).splitlines()[0]}"
        ) from error
    return model.eval()


def mid_epoch_steps_per_execution(meta: dict[str, Any]) -> int | None:
    """The ``trainer.steps_per_execution`` a checkpoint saved mid-epoch (or in a validation within
    training) was training with; None for one saved at an epoch's end, which resumes with any."""
    if "train_sums" not in meta:
        return None
    return meta.get("steps_per_execution", 1)  # saved before genkit had groups: single batches
