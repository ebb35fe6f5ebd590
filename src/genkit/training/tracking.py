"""Experiment tracking: Weights & Biases (offline when there is no API key) and a local CSV log.

W&B must never stop training: a failure to start it falls back to the CSV log with
one warning. Runs of one Hydra sweep share a W&B group named after the sweep; run
names are built from the command-line overrides.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

WANDB_HOST = "api.wandb.ai"
#: The W&B run id of a run folder, kept so that a resumed run continues the same W&B run.
WANDB_ID_FILE = "wandb-run-id"


def has_wandb_key() -> bool:
    """True when W&B can authenticate: ``WANDB_API_KEY`` or a ``~/.netrc`` entry (``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def sweep_identity() -> tuple[str | None, str | None]:
    """(group, run name) from Hydra: the sweep folder's name and the job's overrides."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hc = HydraConfig.get()
    name = hc.job.override_dirname or None
    group = f"sweep-{Path(hc.sweep.dir).name}" if hc.mode == RunMode.MULTIRUN else None
    return group, name


def wandb_mode(options: DictConfig) -> str:
    """The configured W&B mode; unset, ``WANDB_MODE``, else online with an API key and offline without."""
    return options.get("mode") or os.environ.get("WANDB_MODE") or ("online" if has_wandb_key() else "offline")


def wandb_settings(options: DictConfig) -> Any:
    """Bounded start and finish: W&B trouble may delay genkit by at most these many seconds."""
    import wandb

    return wandb.Settings(
        init_timeout=float(options.get("init_timeout", 60)),
        finish_timeout=float(options.get("finish_timeout", 120)),
        finish_timeout_raises=True,  # caught by finish_wandb, which says what to do
        quiet=True,
    )


def wandb_logger(options: DictConfig, cfg: DictConfig, save_dir: Path, resumed: bool = False) -> Any | None:
    """A started ``WandbLogger``, or None (with one warning) if W&B cannot start.

    A resumed run continues the W&B run its folder recorded (same id, ``resume="allow"``).
    """
    mode = wandb_mode(options)
    if mode == "offline" and not (options.get("mode") or os.environ.get("WANDB_MODE")):
        log.info(
            "W&B: no API key found, logging offline under %s/wandb; upload later with "
            "`wandb sync %s/wandb/offline-run-*` (or set logger.wandb.mode / run `wandb login`)",
            save_dir,
            save_dir,
        )
    group, name = sweep_identity()
    id_file = save_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if resumed and id_file.is_file() else None
    try:
        from lightning.pytorch.loggers import WandbLogger
        from lightning.pytorch.utilities import rank_zero_only

        logger = WandbLogger(
            project=options.get("project") or "genkit",
            entity=options.get("entity"),
            group=options.get("group") or group,
            name=options.get("name") or name,
            tags=list(options.get("tags") or []),
            notes=options.get("notes"),
            mode=mode,
            save_dir=str(save_dir),
            config=OmegaConf.to_container(cfg, resolve=True),
            settings=wandb_settings(options),
            **({"id": run_id, "resume": "allow"} if run_id else {}),
        )
        # Lightning passes anonymous=None to wandb.init, which W&B now warns has no effect.
        logger._wandb_init.pop("anonymous", None)
        experiment = logger.experiment  # start now, so a failure is caught here and not mid-training
        if rank_zero_only.rank == 0:  # other ranks hold a placeholder experiment
            id_file.write_text(experiment.id)
    except Exception as error:  # W&B trouble must never stop training
        log.warning(
            "W&B could not start (%s: %s); continuing with the local CSV log only", error.__class__.__name__, error
        )
        return None
    return logger


def build_loggers(cfg: DictConfig, save_dir: Path, resumed: bool = False) -> list[Any]:
    """Loggers named in ``cfg.logger``: ``wandb`` and/or ``csv`` (empty for ``logger=none``).

    A resumed run writes its CSV log to a new ``csv/resume-N`` folder: Lightning's CSV
    logger would otherwise delete the metrics the interrupted run saved.
    """
    from lightning.pytorch.loggers import CSVLogger

    loggers: list[Any] = []
    options = cfg.get("logger") or {}
    if options.get("wandb") is not None:
        logger = wandb_logger(options.wandb, cfg, save_dir, resumed)
        if logger is not None:
            loggers.append(logger)
    if options.get("csv") is not None:
        version = f"resume-{len(list((save_dir / 'csv').glob('resume-*'))) + 1}" if resumed else ""
        loggers.append(CSVLogger(str(save_dir), name="csv", version=version))
    return loggers


def finish_wandb() -> None:
    """Close the W&B run (each job of a sequential sweep gets its own run). An upload that does not
    end within ``finish_timeout`` is left to ``wandb sync``, with a warning: the local files are whole."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        run = wandb.run
        if run is not None:
            try:
                wandb.finish()
            except TimeoutError:
                log.warning(
                    "W&B did not finish uploading within %g s (network or server trouble); the run is complete "
                    "on disk: upload it later with `wandb sync %s`",
                    run.settings.finish_timeout,
                    run.settings.sync_dir,
                )


def record_in_run(run_dir: Path, options: DictConfig, values: dict[str, float]) -> bool:
    """Add ``values`` to the summary of the W&B run the training in ``run_dir`` recorded.

    True when written; False, with the reason logged, when the folder recorded no run or
    W&B fails (results are already saved locally, so this must never raise).
    """
    id_file = run_dir / WANDB_ID_FILE
    if not id_file.is_file():
        log.info("W&B: %s recorded no W&B run, so the results are only saved locally", run_dir)
        return False
    try:
        import wandb

        run = wandb.init(
            id=id_file.read_text().strip(),
            resume="allow",
            project=options.get("project") or "genkit",
            entity=options.get("entity"),
            dir=str(run_dir),
            mode=wandb_mode(options),
            settings=wandb_settings(options),
        )
        run.summary.update(values)
        run.finish()
    except Exception as error:  # the results are saved locally; W&B trouble must not lose them
        log.warning("W&B: could not add the results to run %s (%s: %s)", run_dir, error.__class__.__name__, error)
        return False
    log.info("W&B: results added to the summary of run %s", id_file.read_text().strip())
    return True
