"""Experiment tracking: Weights & Biases (offline when there is no API key) and a local CSV log.

W&B must never stop training: a failure to start it falls back to the CSV log with
one warning. Runs of one Hydra sweep share a W&B group named after the sweep; run
names are built from the command-line overrides.
"""

from __future__ import annotations

import logging
import netrc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from genkit import wandb_models
from genkit.console import verbose
from genkit.errors import LoggerConfigError

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


@dataclass(frozen=True)
class SweepIdentity:
    """Where a Hydra job sits in its sweep: the W&B group, the run's name and the swept values."""

    group: str | None = None  # "sweep-<sweep folder name>"; None outside a sweep
    name: str | None = None  # the job's command-line overrides, "encoder=conv,prior=vamp"
    choices: dict[str, Any] = field(default_factory=dict)  # this job's values of the overrides that vary

    def tags(self) -> list[str]:
        """The swept values as W&B tags (at most 64 characters each, W&B's limit)."""
        return [f"{key}={value}"[:64] for key, value in self.choices.items()]


def sweep_identity() -> SweepIdentity:
    """This Hydra job's place in its sweep; empty outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return SweepIdentity()
    hc = HydraConfig.get()
    name = hc.job.override_dirname or None
    if hc.mode != RunMode.MULTIRUN:
        return SweepIdentity(name=name)
    swept = swept_keys(Path(hc.sweep.dir), hc.sweeper.get("params") or {})
    job = {o.key_or_group: o.value() for o in parse_overrides(hc.overrides.task)}  # typed: W&B's axes are numeric
    choices = {key: value for key, value in job.items() if key in swept}
    return SweepIdentity(f"sweep-{Path(hc.sweep.dir).name}", name, choices)


def swept_keys(sweep_dir: Path, params: Any) -> set[str]:
    """The keys a sweep varies: its command line's sweep overrides (``prior=normal,vamp``, kept by
    Hydra's sweeper in ``multirun.yaml``) and its sweeper's search space (``hydra.sweeper.params``)."""
    keys = set(params)
    saved = sweep_dir / "multirun.yaml"
    if saved.is_file():
        command = OmegaConf.load(saved).hydra.overrides.task
        keys |= {o.key_or_group for o in parse_overrides(command) if o.is_sweep_override()}
    return keys


def parse_overrides(words: Any) -> list[Any]:
    """Hydra's parse of override words."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([str(word) for word in words])


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
        silent=not verbose(),  # quiet mode: not even W&B's lines on where the run is
    )


def model_policy(options: DictConfig) -> str | bool:
    """``logger.wandb.log_model``, checked.

    Raises:
        LoggerConfigError: a value other than false, best or all.
    """
    value = options.get("log_model", False)
    if value not in wandb_models.POLICIES:
        raise LoggerConfigError(
            f"logger.wandb.log_model must be false (keep no model in W&B), best (the best checkpoint, at the end) "
            f"or all (every checkpoint as it is saved), got {value!r}"
        )
    return value


class ModelKeepingWandbLogger(WandbLogger):
    """Lightning's W&B logger that also keeps checkpoints as versions of the run's W&B model artifact
    (``genkit.wandb_models``), with the run's resolved config and metrics as metadata.

    ``log_model=all`` logs each checkpoint file as it is saved (the monitored best with the alias
    ``best``); with ``best`` or ``all`` the best checkpoint is logged once more at the end with the
    final validation and test metrics (``keep_best``). W&B moves ``latest`` to the newest version.
    Lightning's own ``log_model`` stays off: its metadata has neither config nor metrics.
    """

    def __init__(self, policy: str | bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy = policy
        self.metrics: dict[str, float] = {}  # the latest logged value of each metric
        self.kept: dict[str, int] = {}  # checkpoint path -> modification time when logged

    @property
    def models_folder(self) -> Path:
        """``models/`` in the W&B run's folder (offline: beside the ``.wandb`` file `wandb sync` reads)."""
        return Path(self.experiment.dir).parent / "models"

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        # A checkpoint saved after validation is described by that validation; training's epoch
        # metrics are logged after the save, so they would describe the epoch before.
        described = {k: v for k, v in metrics.items() if k.startswith("val/") or k == "epoch"}
        self.metrics.update({k: float(v) for k, v in described.items() if isinstance(v, (int, float))})  # no media
        if step is not None:
            self.metrics["step"] = step

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        if self.policy != "all":
            return
        best = checkpoint_callback.best_model_path
        for path in dict.fromkeys([*checkpoint_callback.best_k_models, checkpoint_callback.last_model_path]):
            if path and Path(path).is_file() and self.kept.get(path) != Path(path).stat().st_mtime_ns:
                self.keep(Path(path), ["best"] if path == best else [], self.metrics)

    def keep(self, checkpoint: Path, aliases: list[str], metrics: dict[str, float]) -> None:
        """Log ``checkpoint`` as a model version (W&B trouble is a warning: the file stays on disk)."""
        metadata = {"file": checkpoint.name, "metrics": dict(metrics), "config": self.experiment.config.as_dict()}
        try:
            self.kept[str(checkpoint)] = checkpoint.stat().st_mtime_ns
            wandb_models.log_checkpoint(self.experiment, checkpoint, aliases, metadata, self.models_folder)
        except Exception as error:  # keeping the model in W&B must never stop training
            log.warning("W&B: could not log %s as a model (%s: %s)", checkpoint, error.__class__.__name__, error)

    @rank_zero_only
    def keep_best(self, checkpoint: str, metrics: dict[str, float]) -> None:
        """At the end of training: the best checkpoint with its final metrics, as ``best``."""
        if self.policy and checkpoint:
            self.keep(Path(checkpoint), ["best"], metrics)
            log.info(
                "W&B: best checkpoint kept as model artifact %s:best", wandb_models.artifact_name(self.experiment.id)
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
    sweep = sweep_identity()
    id_file = save_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if resumed and id_file.is_file() else None
    policy = model_policy(options)
    try:
        logger = ModelKeepingWandbLogger(
            policy,
            project=options.get("project") or "genkit",
            entity=options.get("entity"),
            group=options.get("group") or sweep.group,
            name=options.get("name") or sweep.name,
            tags=[*(options.get("tags") or []), *sweep.tags()],
            notes=options.get("notes"),
            mode=mode,
            save_dir=str(save_dir),
            config={**OmegaConf.to_container(cfg, resolve=True), **({"sweep": sweep.choices} if sweep.choices else {})},
            settings=wandb_settings(options),
            **({"id": run_id, "resume": "allow"} if run_id else {}),
        )
        # Lightning passes anonymous=None to wandb.init, which W&B now warns has no effect.
        logger._wandb_init.pop("anonymous", None)
        experiment = logger.experiment  # start now, so a failure is caught here and not mid-training
        if rank_zero_only.rank == 0:  # other ranks hold a placeholder experiment
            id_file.write_text(experiment.id)
            declare_metrics(experiment, cfg.get("objective") or "val/nelbo")
    except Exception as error:  # W&B trouble must never stop training
        log.warning(
            "W&B could not start (%s: %s); continuing with the local CSV log only", error.__class__.__name__, error
        )
        return None
    return logger


def declare_metrics(run: Any, objective: str) -> None:
    """What the run table shows: the objective's minimum (the value the best checkpoint was chosen
    by) beside its last value, and the last epoch reached; every metric is plotted against the step
    (Lightning declares that axis)."""
    for name in dict.fromkeys([objective, "val/nelbo"]):
        run.define_metric(name, step_metric="trainer/global_step", step_sync=True, summary="min,last")
    run.define_metric("epoch", summary="max")


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
