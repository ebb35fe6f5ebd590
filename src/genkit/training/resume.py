"""Continuing an interrupted run: the checkpoint to restart from, and whether the new
configuration may continue it (``genkit.cli.train`` rebuilds the command line it was started with).
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from genkit.checkpoint import mid_epoch_steps_per_execution, read_checkpoint, upgrade_config
from genkit.errors import CheckpointError, ResumeError, UnknownPartError
from genkit.registry import KINDS, registry
from genkit.spec import DataSpec
from genkit.training.optimization import OptimizerSteps

log = logging.getLogger(__name__)

#: Top-level config keys that define the model, its data or its optimisation: a resumed run
#: must keep them, or the checkpoint's weights and optimiser state would not fit.
FROZEN_KEYS = (*KINDS, "optim", "scheduler", "seed", "plugins")
#: Options under them that change where or how fast data is decoded, never what is trained on.
FREE_KEYS = frozenset({"data.cache_dir", "data.workers"})


@dataclass
class ResumePoint:
    """Where a resumed job starts: a checkpoint, or nothing to do (the job had finished)."""

    checkpoint: Path | None
    finished: dict[str, float] | None = None


def latest_checkpoint(folder: Path) -> tuple[Path, dict[str, Any], dict[str, Any]] | None:
    """The newest readable checkpoint in ``folder`` (``last.ckpt`` first), what genkit stored in it
    and the run config stored in it, warning about unreadable ones.

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
            checkpoint, stored = read_checkpoint(path)
        except CheckpointError as error:
            log.warning("%s; trying the previous one", error)
            continue
        return path, checkpoint["genkit"], OmegaConf.to_container(stored)
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
    """``["model.latent_dim: 4 -> 8", ...]``: changes under ``FROZEN_KEYS`` (but ``FREE_KEYS``) between two
    run configs."""
    old = flatten({k: stored.get(k) for k in FROZEN_KEYS})
    new = flatten({k: current.get(k) for k in FROZEN_KEYS})
    missing = object()
    return [
        f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, missing) != new.get(key, missing)
        and key not in FREE_KEYS
        and not (key not in old and added_at_default(key, new[key], current))
    ]


def added_at_default(key: str, value: Any, config: dict[str, Any]) -> bool:
    """Whether ``key`` (which a stored run's config lacks) is an option of the registered class its
    group builds, at that option's default: one added to genkit since, leaving what is trained as it was."""
    kind, _, name = key.partition(".")
    node = config.get(kind)
    if kind not in KINDS or "." in name or not isinstance(node, dict) or "_target_" not in node:
        return False
    try:
        cls = registry(kind).by_target(node["_target_"]).cls
    except UnknownPartError:
        return False
    parameter = inspect.signature(cls).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return False
    default = list(parameter.default) if isinstance(parameter.default, tuple) else parameter.default
    return default == value


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
    checkpoint, meta, stored = found
    changes = frozen_changes(stored, OmegaConf.to_container(cfg, resolve=True))
    if changes:
        raise ResumeError(
            f"cannot resume {run_dir}: the configuration changes what {checkpoint.name} was trained as: "
            f"{'; '.join(changes)}. Keep those as they were (training length, logging and callbacks "
            "may change), or start a new run"
        )
    saved, steps = mid_epoch_steps_per_execution(meta), OptimizerSteps.from_trainer(cfg.trainer).steps_per_execution
    if saved not in (None, steps):
        raise ResumeError(
            f"cannot resume {run_dir}: {checkpoint.name} was saved mid-epoch while training in groups of "
            f"trainer.steps_per_execution={saved} batches, and Lightning's position in the epoch counts those "
            f"groups; resume with trainer.steps_per_execution={saved} (change it only from a checkpoint saved "
            "at an epoch's end)"
        )
    return checkpoint


def check_same_data(checkpoint: Path, spec: DataSpec) -> None:
    """Refuse to continue from ``checkpoint`` on data of another kind than it was trained on (say, a
    prepared folder prepared again with other settings).

    Raises:
        ResumeError: naming what differs.
    """
    stored, _ = read_checkpoint(checkpoint)
    differences = DataSpec.from_dict(stored["genkit"]["spec"]).differences(spec)
    if differences:
        raise ResumeError(
            f"cannot resume from {checkpoint}: the data is not what it was trained on: it has "
            f"{'; '.join(differences)}. Point data.* at the data it was trained on, or start a new run"
        )


def resume_point(cfg: DictConfig, run_dir: Path) -> ResumePoint:
    """Decide how the job in ``run_dir`` continues under ``cfg``: skip it (finished with this
    very configuration), continue from its newest readable checkpoint, or start it afresh.

    Raises:
        ResumeError: see ``checked_checkpoint``.
    """
    results = run_dir / "metrics.json"
    if results.is_file():
        finished = json.loads(results.read_text())
        stored = upgrade_config(finished.get("config", {}))
        if comparable(stored) == comparable(OmegaConf.to_container(cfg, resolve=True)):
            log.info("%s finished with this configuration already; nothing to do", run_dir)
            return ResumePoint(None, finished["metrics"])
    checkpoint = checked_checkpoint(cfg, run_dir)
    if checkpoint is None:
        log.info("no checkpoint in %s yet: starting this job from the beginning", run_dir)
    else:
        log.info("resuming from %s", checkpoint)
    return ResumePoint(checkpoint)
