"""One training run from a composed config: seed, discover, compose, fit, test, summarise."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig, OmegaConf

from genkit import plugins
from genkit.compose import compose, entry_for
from genkit.config import check_run_options
from genkit.console import SUMMARY, be_quiet, quiet_dependencies, verbose
from genkit.data.base import DataModule
from genkit.data.groups import StepGroups
from genkit.errors import TrainerConfigError
from genkit.registry import PART_KINDS
from genkit.training.folder import RunLock, launched_rank, write_atomically
from genkit.training.metrics import summary_table
from genkit.training.optimization import STEP_ARGUMENTS
from genkit.training.resume import ResumePoint, check_same_data, resume_point
from genkit.training.tracking import ModelKeepingWandbLogger, build_loggers, finish_wandb

log = logging.getLogger(__name__)


#: Test hook: seconds to pause halfway through writing a checkpoint, so a test can kill the
#: process inside the write. Never set it outside tests.
WRITE_DELAY_ENV = "GENKIT_TEST_CHECKPOINT_WRITE_DELAY"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written whole or not at all: to a hidden temporary file in the same folder,
    flushed to disk, then renamed over the target (an atomic step on POSIX and Windows). A kill
    during a save leaves the previous ``last.ckpt`` intact; remote (``scheme://``) paths use
    Lightning's own writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomically(Path(path), buffer.getbuffer(), pause=float(os.environ.get(WRITE_DELAY_ENV, "0") or 0))
        return None


class Unprofiled(PassThroughProfiler):
    """Lightning's default when no profiler is chosen (one that records nothing), without a context per
    action: Lightning opens one around each of the ~30 hook calls of a training step, and its
    generator-based context costs ~1 us each where a shared ``nullcontext`` costs ~0.2 us."""

    UNTIMED = nullcontext()

    def profile(self, action_name: str) -> AbstractContextManager:
        return self.UNTIMED


def build_callbacks(cfg: DictConfig, output_dir: Path) -> list[L.Callback]:
    """Callbacks from the ``callbacks`` group (a dict of named nodes; null one to drop it)."""
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar

    callbacks = []
    for node in (cfg.get("callbacks") or {}).values():
        if node is None:
            continue
        callback = instantiate(node)
        if isinstance(callback, ProgressBar) and not verbose():
            continue
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
            callback.dirpath = str(output_dir / "checkpoints")
        callbacks.append(callback)
    return callbacks


def banner(cfg: DictConfig, datamodule: Any, data_name: str) -> str:
    """Which part is which, and where it came from."""
    lines = [f"data       {data_name:<14} {datamodule.spec.describe()}"]
    for kind in PART_KINDS:
        entry = entry_for(kind, cfg[kind])
        lines.append(f"{kind:<10} {entry.name:<14} ({entry.origin})")
    return "\n".join(lines)


def build_trainer(cfg: DictConfig, loggers: list[Any], callbacks: list[L.Callback], output_dir: Path) -> L.Trainer:
    """The Lightning Trainer of ``cfg.trainer``; settings this machine cannot run become one clear error.

    Raises:
        TrainerConfigError: unknown devices, accelerator, strategy or precision, an unknown
            Trainer argument, or more devices than exist.
    """
    arguments = OmegaConf.to_container(cfg.trainer, resolve=True)
    for name in STEP_ARGUMENTS:
        arguments.pop(name, None)
    if arguments.get("profiler") is None:
        arguments["profiler"] = Unprofiled()
    try:
        return L.Trainer(
            **arguments,
            logger=loggers or False,
            callbacks=callbacks,
            enable_progress_bar=verbose(),
            default_root_dir=str(output_dir),
            plugins=[AtomicCheckpointIO()],
        )
    except (MisconfigurationException, ValueError, TypeError) as error:
        raise TrainerConfigError(
            f"Lightning cannot run these trainer settings here: {str(error).rstrip('.!')}. This machine has "
            f"{torch.cuda.device_count()} CUDA GPU(s) and {os.cpu_count()} CPU cores. Use trainer=cpu (any machine), "
            "trainer=ddp_cpu trainer.devices=N (N processes), trainer=gpu (one GPU) or trainer=ddp with "
            "trainer.devices at most the GPUs present; `genkit-train --cfg job` shows the trainer settings."
        ) from error


#: Lightning's hooks that see each batch a loader yields: with ``steps_per_execution`` they see a group.
BATCH_TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


def group_training_batches(cfg: DictConfig, datamodule: Any, steps: int) -> None:
    """With ``steps`` (``trainer.steps_per_execution``) above 1, make ``datamodule``'s training loader
    yield groups of that many batches (``genkit.data.groups``). Settings that count single batches in Lightning's
    loop (validation or checkpoints every N batches, batch limits) are refused.

    Raises:
        TrainerConfigError: naming the setting that cannot work with groups, and the fix.
    """
    if steps == 1:
        return
    fix = "or set trainer.steps_per_execution=1"
    trainer = cfg.trainer
    counted = {
        "trainer.val_check_interval": trainer.get("val_check_interval"),
        "trainer.limit_train_batches": trainer.get("limit_train_batches"),
    }
    for name, value in counted.items():
        if value is not None and not (isinstance(value, float) and value == 1.0):
            raise TrainerConfigError(
                f"{name}={value} counts single batches, which trainer.steps_per_execution={steps} runs in groups; "
                f"leave it at 1.0 {fix}"
            )
    if trainer.get("overfit_batches"):
        raise TrainerConfigError(f"trainer.overfit_batches does not work with grouped batches; {fix}")
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None and node.get("every_n_train_steps"):
            raise TrainerConfigError(
                f"callbacks.{name}.every_n_train_steps counts single steps, which trainer.steps_per_execution={steps} "
                f"runs in groups; save every_n_epochs instead {fix}"
            )
    own = [
        hook
        for hook in BATCH_TRANSFER_HOOKS
        if not defining_class(datamodule, hook).__module__.startswith(("genkit.", "lightning."))
    ]
    if not isinstance(datamodule, DataModule) or own:
        raise TrainerConfigError(
            f"the data module {type(datamodule).__name__} readies batches in its own way "
            f"({', '.join(own) or 'not a genkit.data.DataModule'}), which cannot be applied batch by batch in "
            f"groups; move that work into device_batch {fix}"
        )
    make = datamodule.train_dataloader

    def grouped() -> StepGroups:
        loader = make()
        if isinstance(loader, torch.utils.data.DataLoader) and not type(loader).__module__.startswith("genkit."):
            raise TrainerConfigError(
                f"the data module {type(datamodule).__name__} trains from a torch DataLoader, which Lightning "
                f"prepares (distributed sampler, worker seeds) only when it is handed over as it is; {fix}"
            )
        return StepGroups(loader, steps)

    datamodule.train_dataloader = grouped


def defining_class(instance: Any, name: str) -> type:
    """The class in ``instance``'s MRO that defines the attribute ``name``."""
    return next(cls for cls in type(instance).__mro__ if name in vars(cls))


def skip_nvml_probe_without_gpu() -> None:
    """On a machine without a usable GPU, answer torch's CUDA checks without NVML.

    Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` so that checking for CUDA
    cannot poison forked processes; torch's optimisers check on every step, and until CUDA
    is initialised each NVML check loads the NVML library again (~40 µs, 1-2% of a small
    model's CPU step). Where that check finds no GPU, CUDA's own device count (cached, and
    with no device nothing to poison) gives the same answer.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and not torch.cuda.is_available():
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"


#: Written when training ends, before the final evaluation: the last epoch's training metrics, which a
#: run killed during that evaluation cannot recompute on resuming (its fit is already complete).
TRAINING_END = "training-end.json"


def training_metrics(trainer: L.Trainer, output_dir: Path) -> dict[str, float]:
    """The last training epoch's metrics: those just logged, or, when the fit had ended before this
    process (resuming a run killed during its final evaluation), those saved when it ended."""
    logged = trainer.callback_metrics.items()
    metrics = {k: float(v) for k, v in logged if k.startswith("train/")}
    saved = output_dir / TRAINING_END
    if metrics:
        if trainer.is_global_zero:
            write_atomically(saved, json.dumps(metrics).encode())
    elif saved.is_file():
        metrics = json.loads(saved.read_text())
    return metrics


class StopRequests:
    """SIGTERM and the first Ctrl-C while no Lightning stage runs (its own handlers live only while
    one does, and it finishes a stage's last step before looking at them), remembered so that the
    run stops before the next stage instead of dying between two."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.request) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def request(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def final_evaluation(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: Any,
    ckpt_path: str | None,
    seed: int,
    stop: StopRequests,
) -> dict[str, float]:
    """Validation and test metrics of the chosen weights, drawn from a stream seeded by the run's seed
    (not whatever training left), so a run resumed after a kill here reports the same numbers."""
    metrics: dict[str, float] = {}
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for evaluate in (trainer.validate, trainer.test):
            if stop.requested:
                log.warning(
                    "interrupted before the final evaluation: training is complete and saved; "
                    "genkit-train resume=%s evaluates and writes the results",
                    trainer.default_root_dir,
                )
                raise SIGTERMException
            for results in evaluate(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False):
                metrics.update({k: float(v) for k, v in results.items()})
    return metrics


def train(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    """Train and test one model, holding ``output_dir``'s lock throughout (``genkit.training.folder``;
    taken by rank zero: the other processes of a DDP run share the folder); returns the final metrics
    (also written to ``metrics.json``).

    Raises:
        RunFolderError: another running genkit run holds ``output_dir``.
    """
    with RunLock(output_dir) if launched_rank() == 0 else nullcontext():
        return train_in(cfg, output_dir)


def train_in(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    """``train`` without the folder's lock."""
    # Argument validation in torch.distributions is a debugging aid that costs time every
    # step; genkit.testing's contract checks keep it on.
    torch.distributions.Distribution.set_default_validate_args(False)
    skip_nvml_probe_without_gpu()
    quiet_dependencies()
    check_run_options(cfg)
    if not cfg.verbose:
        be_quiet()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    plugins.load(list(cfg.get("plugins") or []))
    start = resume_point(cfg, output_dir) if cfg.get("resume") else ResumePoint(None)
    if start.finished is not None:
        return start.finished
    datamodule, model = compose(cfg)
    group_training_batches(cfg, datamodule, model.optimization.steps.steps_per_execution)
    if start.checkpoint is not None:
        check_same_data(start.checkpoint, datamodule.spec)
    data_name = entry_for("data", cfg.data).name
    log.info("genkit run in %s\n%s", output_dir, banner(cfg, datamodule, data_name))
    callbacks = build_callbacks(cfg, output_dir)
    loggers = build_loggers(cfg, output_dir, resumed=start.checkpoint is not None)
    if cfg.get("compile"):
        model.compile_bound(cfg.compile)
    try:
        trainer = build_trainer(cfg, loggers, callbacks, output_dir)
        try:
            with StopRequests() as stop:
                trainer.fit(model, datamodule=datamodule, ckpt_path=start.checkpoint)
                metrics = training_metrics(trainer, output_dir)
                best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
                metrics.update(final_evaluation(trainer, model, datamodule, "best" if best else None, cfg.seed, stop))
        except SIGTERMException:  # SIGTERM or Ctrl-C (CheckpointOnInterrupt saved what it could): say we were stopped
            raise SystemExit(128 + signal.SIGTERM) from None
        if trainer.is_global_zero:  # saved before W&B's final upload, which may wait on the network
            weights = "best checkpoint" if best else "final weights"
            if trainer.global_step == 0:
                weights = "the initial weights: no training step was taken"
                log.warning(
                    "no training step was taken (trainer.max_epochs=%s, max_steps=%s, limit_train_batches=%s), so "
                    "no checkpoint was written and the metrics below are of the untrained model",
                    trainer.max_epochs,
                    trainer.max_steps,
                    trainer.limit_train_batches,
                )
            SUMMARY.info("final metrics\n%s", summary_table(metrics, weights))
            if best:
                SUMMARY.info("best checkpoint: %s", best)
            results = {"metrics": metrics, "best_checkpoint": best, "config": OmegaConf.to_container(cfg, resolve=True)}
            write_atomically(output_dir / "metrics.json", json.dumps(results, indent=2).encode())
            for logger in loggers:
                if isinstance(logger, ModelKeepingWandbLogger):
                    logger.keep_best(best, metrics)
    finally:
        finish_wandb()
    return metrics
