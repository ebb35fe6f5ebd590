"""Continuing an interrupted run: the command line it was started with, the checkpoint to
restart from, and whether the new configuration may continue it.

``genkit-train resume=DIR`` re-reads the overrides the run in DIR was started with (Hydra
keeps them in ``DIR/.hydra/overrides.yaml``), applies the new ones on top and runs in DIR
again. With ``-m`` DIR is a sweep folder: every job of the same sweep command finds its own
folder, finished jobs are skipped and interrupted ones continue from their checkpoints.
``resume=auto`` makes each job continue its own folder, whatever the command line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from genkit.checkpoint import read_checkpoint
from genkit.errors import CheckpointError, ResumeError

log = logging.getLogger(__name__)

#: Top-level config keys that define the model, its data or its optimisation: a resumed run
#: must keep them, or the checkpoint's weights and optimiser state would not fit.
FROZEN_KEYS = (
    "data",
    "encoder",
    "posterior",
    "prior",
    "decoder",
    "likelihood",
    "model",
    "optim",
    "scheduler",
    "seed",
    "plugins",
)
#: ``resume=auto``: each job continues whatever its own run folder holds (nothing: a fresh start),
#: so the same command with a fixed ``hydra.run.dir``/``hydra.sweep.dir``, or a requeued SLURM
#: job, restarts where it stopped.
AUTO = "auto"
#: Overrides a resumed run never inherits from the original command.
NOT_INHERITED = ("resume", "hydra.run.dir", "hydra.sweep.dir")


def override_key(override: str) -> str:
    """``trainer.max_epochs`` of ``++trainer.max_epochs=3``; ``encoder`` of ``encoder=conv``."""
    return override.split("=", 1)[0].lstrip("+~")


def resume_arguments(argv: list[str]) -> list[str]:
    """The command line to run: ``argv`` with ``resume=DIR`` expanded (``resume=auto`` is left as it is).

    Single run: the run's original overrides, then the new ones (a new value of the same
    key wins), then ``hydra.run.dir=DIR``. Multirun: ``hydra.sweep.dir=DIR`` is added and
    the sweep command itself says which jobs there are.

    Raises:
        ResumeError: DIR does not exist or holds no genkit run.
    """
    given = [a for a in argv[1:] if not a.startswith("-") and override_key(a) == "resume" and "=" in a]
    if not given or given[-1].split("=", 1)[1] == AUTO:
        return argv
    folder = Path(given[-1].split("=", 1)[1]).expanduser()
    if not folder.is_dir():
        raise ResumeError(f"resume={folder}: there is no such folder; give the run (or sweep) folder to continue")
    if "-m" in argv or "--multirun" in argv:
        return [*argv, f"hydra.sweep.dir={folder}"]
    recorded = folder / ".hydra" / "overrides.yaml"
    if not recorded.is_file():
        raise ResumeError(
            f"resume={folder}: {recorded} is missing, so this is not a genkit-train run folder "
            "(for a sweep folder add -m and the sweep's arguments)"
        )
    original = [str(o) for o in OmegaConf.load(recorded)]
    flags, new = [a for a in argv[1:] if a.startswith("-") or "=" not in a], [a for a in argv[1:] if "=" in a]
    replaced = {override_key(o) for o in new} | set(NOT_INHERITED)
    inherited = [o for o in original if override_key(o) not in replaced]
    return [argv[0], *flags, *inherited, *new, f"hydra.run.dir={folder}"]


@dataclass
class ResumePoint:
    """Where a resumed job starts: a checkpoint, or nothing to do (the job had finished)."""

    checkpoint: Path | None
    finished: dict[str, float] | None = None


def latest_checkpoint(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint in ``folder`` (``last.ckpt`` first) and the run config
    stored in it, warning about unreadable ones.

    Leftovers of a write that was cut off (``.*.tmp``) are removed: the atomic write never
    renamed them over a checkpoint, so they hold nothing that was saved.
    """
    if not folder.is_dir():
        return None
    for leftover in folder.glob(".*.tmp"):
        leftover.unlink()
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: (p.name != "last.ckpt", -p.stat().st_mtime))
    for path in candidates:
        try:
            _, stored = read_checkpoint(path)
        except CheckpointError as error:
            log.warning("%s; trying the previous one", error)
            continue
        return path, OmegaConf.to_container(stored)
    if candidates:
        raise ResumeError(
            f"no checkpoint in {folder} can be read ({', '.join(p.name for p in candidates)}); "
            "start a new run, or restore a checkpoint from a backup"
        )
    return None


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.latent_dim": 4, ...}`` of a nested container."""
    if isinstance(node, dict):
        items: dict[str, Any] = {}
        for key, value in node.items():
            items.update(flatten(value, f"{prefix}{key}."))
        return items or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def frozen_changes(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``["model.latent_dim: 4 -> 8", ...]``: changes under ``FROZEN_KEYS`` between two run configs."""
    old = flatten({k: stored.get(k) for k in FROZEN_KEYS})
    new = flatten({k: current.get(k) for k in FROZEN_KEYS})
    missing = object()
    return [
        f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, missing) != new.get(key, missing)
    ]


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "resume"}


def checked_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint ``run_dir``'s job continues from under ``cfg`` (None: start afresh).

    Raises:
        ResumeError: ``cfg`` changes what the checkpoint was trained as, or no checkpoint
            there can be read.
    """
    found = latest_checkpoint(run_dir / "checkpoints")
    if found is None:
        return None
    checkpoint, stored = found
    changes = frozen_changes(stored, OmegaConf.to_container(cfg, resolve=True))
    if changes:
        raise ResumeError(
            f"cannot resume {run_dir}: the configuration changes what {checkpoint.name} was trained as: "
            f"{'; '.join(changes)}. Keep those as they were (training length, logging and callbacks "
            "may change), or start a new run"
        )
    return checkpoint


def resume_point(cfg: DictConfig, run_dir: Path) -> ResumePoint:
    """Decide how the job in ``run_dir`` continues under ``cfg``: skip it (finished with this
    very configuration), continue from its newest readable checkpoint, or start it afresh.

    Raises:
        ResumeError: see ``checked_checkpoint``.
    """
    results = run_dir / "metrics.json"
    if results.is_file():
        finished = json.loads(results.read_text())
        if comparable(finished.get("config", {})) == comparable(OmegaConf.to_container(cfg, resolve=True)):
            log.info("%s finished with this configuration already; nothing to do", run_dir)
            return ResumePoint(None, finished["metrics"])
    checkpoint = checked_checkpoint(cfg, run_dir)
    if checkpoint is None:
        log.info("no checkpoint in %s yet: starting this job from the beginning", run_dir)
    else:
        log.info("resuming from %s", checkpoint)
    return ResumePoint(checkpoint)
