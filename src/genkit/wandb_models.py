"""Trained models kept in W&B: checkpoints logged as W&B model artifacts by a training run, and
``wandb:ENTITY/PROJECT/NAME:ALIAS`` references turned back into local checkpoint files.

An artifact holds one file, ``model.ckpt``: a genkit checkpoint, loaded like any other (weights
only, registered parts only). Before logging, the checkpoint is frozen into the run's
``wandb/models/`` folder (a hard link, or a copy across file systems): Lightning replaces
``last.ckpt`` and deletes superseded best checkpoints, and an offline run must still hold every
file it logged when ``wandb sync`` uploads it later.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from genkit.errors import CheckpointError

PREFIX = "wandb:"
#: ``logger.wandb.log_model``: never, the best checkpoint at the end, or every checkpoint as it is saved.
POLICIES = (False, "best", "all")
#: Where ``wandb:`` references are downloaded (one folder per artifact version, reused).
CACHE = Path("~/.cache/genkit/models")
#: The file name of the checkpoint inside every genkit model artifact.
FILE_NAME = "model.ckpt"


def is_reference(ckpt: str | Path) -> bool:
    """True for ``wandb:...`` checkpoint arguments."""
    return str(ckpt).startswith(PREFIX)


def artifact_name(run_id: str) -> str:
    """The W&B artifact a run logs its checkpoints to, one version per logged checkpoint."""
    return f"model-{run_id}"


def freeze(checkpoint: Path, folder: Path) -> Path:
    """``checkpoint`` as it is now, kept in ``folder`` under a name no later save reuses."""
    folder.mkdir(parents=True, exist_ok=True)
    frozen = folder / f"{checkpoint.stem}-{checkpoint.stat().st_mtime_ns}{checkpoint.suffix}"
    if not frozen.exists():
        try:
            os.link(checkpoint, frozen)  # atomic saves replace files, so the link keeps this version
        except OSError:  # another file system, or links not allowed
            shutil.copy2(checkpoint, frozen)
    return frozen


def log_checkpoint(run: Any, checkpoint: Path, aliases: list[str], metadata: dict[str, Any], folder: Path) -> None:
    """Log ``checkpoint`` as a new version of the run's model artifact (W&B skips unchanged files)."""
    import wandb

    artifact = wandb.Artifact(name=artifact_name(run.id), type="model", metadata=metadata)
    artifact.add_file(str(freeze(checkpoint, folder)), name=FILE_NAME, policy="immutable")
    run.log_artifact(artifact, aliases=aliases)


def download(reference: str, cache: Path = CACHE) -> Path:
    """The checkpoint of the W&B model artifact ``wandb:ENTITY/PROJECT/NAME:ALIAS``, downloaded
    through W&B's artifact API into ``cache`` (once per artifact version).

    Raises:
        CheckpointError: the reference is malformed, W&B cannot be reached, the artifact does not
            exist, or it holds no genkit checkpoint; the message says what W&B answered.
    """
    name = reference[len(PREFIX) :]
    if name.count("/") != 2 or ":" not in name.rsplit("/", 1)[1]:
        raise CheckpointError(
            f"{reference} is not a W&B model reference: write wandb:ENTITY/PROJECT/NAME:ALIAS, "
            "for example wandb:my-team/genkit/model-1a2b3c4d:best"
        )
    try:
        import wandb

        artifact = wandb.Api(timeout=30).artifact(name, type="model")
        version = f"{artifact.name.split(':')[0]}-{artifact.version}"  # an alias moves; a version does not
        folder = cache.expanduser() / artifact.entity / artifact.project / version
        artifact.download(root=str(folder))
    except Exception as error:  # W&B raises many kinds (network, auth, not found); all mean "not available"
        said = " ".join(str(error).split()) or error.__class__.__name__
        raise CheckpointError(
            f"{reference} could not be fetched from W&B: {said}. Check the name in the run's Artifacts tab "
            "(or `wandb artifact ls ENTITY/PROJECT`), or give the checkpoint's local path instead (the run "
            "folder's checkpoints/, or wandb/*/models/ for every logged version)"
        ) from None
    checkpoint = folder / FILE_NAME
    if not checkpoint.is_file():
        raise CheckpointError(f"{reference} holds no {FILE_NAME}, so it is not a model genkit logged")
    return checkpoint
