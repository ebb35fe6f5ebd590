"""Loading trained models from checkpoints, safely and without the original config files."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from omegaconf import OmegaConf

from genkit.errors import CheckpointError
from genkit.model import VAE
from genkit.spec import DataSpec


def load(path: str | Path, map_location: str | torch.device = "cpu") -> VAE:
    """The trained ``VAE`` stored in a genkit checkpoint, in eval mode.

    The file is read with ``weights_only=True`` (no code from the file runs) and the
    stored config may only name registered parts (the registry is an allow-list).

    Raises:
        CheckpointError: the file is missing, unreadable, or not a genkit checkpoint.
    """
    from genkit import plugins
    from genkit.compose import build_model

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"checkpoint {path} cannot be read ({error.__class__.__name__}: {error})") from error
    meta = checkpoint.get("genkit") if isinstance(checkpoint, dict) else None
    if not meta:
        raise CheckpointError(f"{path} is not a genkit checkpoint (no 'genkit' section with the run's config)")
    cfg = OmegaConf.create(meta["config"])
    plugins.load(list(cfg.get("plugins") or []))
    model = build_model(cfg, DataSpec.from_dict(meta["spec"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
