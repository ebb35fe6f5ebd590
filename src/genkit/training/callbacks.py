"""Optional training behaviour as Lightning callbacks: media logging, a checkpoint on interruption, progress."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

from genkit.console import on_terminal
from genkit.modalities import Examples

log = logging.getLogger(__name__)

#: Prior samples use this seed every epoch, so the same z shows how decoding evolves.
MEDIA_SEED = 0


class Media(Callback):
    """Each validation epoch, what the model makes of data: inputs beside reconstructions, and prior samples.

    What is shown is the model's modality's (``genkit.modalities``): images as grids
    (``val/reconstructions``, ``val/samples``); text as tables of input -> reconstruction
    pairs and of sampled sentences (greedy decoding from z; the console shows a few each
    epoch); audio as clips to listen to (``val/audio/inputs``, ``val/audio/reconstructions``,
    ``val/audio/samples``; log-mel turned into sound by Griffin-Lim) and their spectrograms.
    Logged to W&B on rank zero; at the end of training the last ones are written as files
    in the run folder. Sampling runs in a forked RNG, so turning media on or off does not
    change training.

    Args:
        every_n_epochs: log every this many validation epochs.
        n: number of examples and samples.
        n_audio: number of audio clips of each kind (Griffin-Lim takes a moment per clip).
    """

    def __init__(self, every_n_epochs: int = 1, n: int = 16, n_audio: int = 8) -> None:
        self.every_n_epochs = every_n_epochs
        self.n = n
        self.n_audio = n_audio
        self.inputs: dict[str, Tensor] | None = None

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:  # noqa: ANN001
        if batch_idx == 0 and self.inputs is None:
            self.inputs = {k: v[: self.n].detach() for k, v in batch.items() if k in ("x", "mask")}

    def examples(self, pl_module: LightningModule) -> Examples:
        """The kept inputs (as many as the modality shows), their reconstructions and as many prior
        samples, drawn with a fixed seed in eval mode (what a reloaded model would produce)."""
        count = pl_module.modality.media_count(self.n, self.n_audio)
        x, mask = self.inputs["x"][:count], self.inputs.get("mask")
        mask = mask[:count] if mask is not None else None
        devices = [x.device] if x.device.type == "cuda" else []
        training = pl_module.training
        pl_module.eval()
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(MEDIA_SEED)
                return Examples(x, mask, pl_module.reconstruct(x, mask), pl_module.sample(len(x)))
        finally:
            pl_module.train(training)

    def shows(self, trainer: Trainer, pl_module: LightningModule) -> bool:
        return trainer.is_global_zero and self.inputs is not None and pl_module.modality is not None

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        due = (
            trainer.state.fn == "fit"
            and not trainer.sanity_checking
            and not trainer.received_sigterm  # stopping: the media can wait for the next epoch
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )
        if not due or not self.shows(trainer, pl_module):
            return
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if loggers or pl_module.modality.console:
            pl_module.modality.log_media(loggers, trainer.global_step, trainer.current_epoch, self.examples(pl_module))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.shows(trainer, pl_module) and not trainer.received_sigterm:
            pl_module.modality.save_media(Path(trainer.default_root_dir), self.examples(pl_module))


class CheckpointOnInterrupt(Callback):
    """On SIGTERM (SLURM preemption, ``kill``) or Ctrl-C, finish the step, save ``last.ckpt``, exit.

    Lightning turns SIGTERM into an exception after the current step, on every DDP rank;
    this callback makes the first Ctrl-C do the same (by sending the process SIGTERM) rather
    than interrupting a step half done, and saves the state there, mid-epoch, data position
    included, so ``resume=RUN_DIR`` continues from that very step. In a validation within training,
    the save reruns that validation from its start (``VAE.rewind_validation``). A second Ctrl-C
    stops at once and keeps the last checkpoint on disk.
    """

    def __init__(self) -> None:
        self.previous_handler: Any = None
        self.signal_name = "SIGTERM"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if threading.current_thread() is threading.main_thread():  # training and the final validation and test
            self.previous_handler = signal.signal(signal.SIGINT, self.stop_after_step)

    def stop_after_step(self, signum: int, frame: Any) -> None:
        self.signal_name = "Ctrl-C"
        self.restore_handler()
        os.kill(os.getpid(), signal.SIGTERM)

    def restore_handler(self) -> None:
        if self.previous_handler is not None:
            signal.signal(signal.SIGINT, self.previous_handler)
            self.previous_handler = None

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.restore_handler()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.restore_handler()
        if isinstance(exception, KeyboardInterrupt):
            log.warning("interrupted at once: the last checkpoint on disk stands")
            return
        if not isinstance(exception, SIGTERMException):
            return
        if trainer.state.fn != "fit":  # the final validation or test: training and its checkpoints are complete
            stage, loop, batches = (
                ("test", trainer.test_loop, trainer.num_test_batches)
                if trainer.testing
                else ("validation", trainer.validate_loop, trainer.num_val_batches)
            )
            log.warning(
                "interrupted by %s in batch %d of %s of the final %s: training is complete and saved; "
                "genkit-train resume=%s evaluates again and writes the results",
                self.signal_name,
                loop.batch_progress.current.completed,
                sum(batches),
                stage,
                trainer.default_root_dir,
            )
            return
        callback = trainer.checkpoint_callback
        folder = Path(trainer.default_root_dir) / "checkpoints"
        path = (Path(callback.dirpath) if callback and callback.dirpath else folder) / "last.ckpt"
        if trainer.training:
            where = f"at step {trainer.global_step}"
        else:  # inside a validation within training: the checkpoint reruns it from its start
            validated = trainer.fit_loop.epoch_loop.val_loop.batch_progress.current.completed
            where = f"in validation batch {validated} of {sum(trainer.num_val_batches)} (step {trainer.global_step})"
            if not pl_module.rewind_validation():
                log.warning(
                    "interrupted by %s %s: the last checkpoint stands; continue with genkit-train resume=%s",
                    self.signal_name,
                    where,
                    trainer.default_root_dir,
                )
                return
        trainer.save_checkpoint(path)
        log.warning(
            "interrupted by %s %s: saved %s; continue with genkit-train resume=%s",
            self.signal_name,
            where,
            path,
            trainer.default_root_dir,
        )


def progress_bar(refresh_rate: int = 20) -> ProgressBar:
    """Where the output is a terminal, a Rich bar redrawn every ``refresh_rate`` steps (0: none) with the
    epoch's metrics; elsewhere (a SLURM log, CI, ``| tee``) one line per epoch, so a log stays small."""
    if not on_terminal():
        return EpochLines()
    from lightning.pytorch.callbacks import RichProgressBar

    return RichProgressBar(refresh_rate=refresh_rate)


class EpochLines(ProgressBar):
    """One line per training epoch (its number, step, -ELBO, reconstruction and KL of training and of the
    last validation, and its seconds), logged like genkit's other lines: nothing per step."""

    #: Metric name -> its label on the line.
    SHOWN = {"nelbo": "-ELBO", "rec": "rec", "kl": "KL"}

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self.pending: tuple[int, float] | None = None  # an epoch that ended, and its seconds
        self.started = time.perf_counter()  # of the epoch (a run resumed mid-epoch starts none)

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.report(trainer)  # the epoch before: its training metrics are logged after callbacks' epoch end
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.pending = trainer.current_epoch, time.perf_counter() - self.started

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.report(trainer)

    def report(self, trainer: Trainer) -> None:
        if self.pending is None or not self.enabled:
            return
        epoch, seconds = self.pending
        self.pending = None
        metrics = trainer.callback_metrics
        parts = [f"epoch {epoch + 1}/{trainer.max_epochs} step {trainer.global_step}"]
        for split in ("train", "val"):
            names = [(name, label) for name, label in self.SHOWN.items() if f"{split}/{name}" in metrics]
            shown = [f"{label} {float(metrics[f'{split}/{name}']):.4g}" for name, label in names]
            if shown:
                parts.append(f"{split} " + " ".join(shown))
        log.info("%s (%.1f s)", ", ".join(parts), seconds)
