"""Optional training behaviour as Lightning callbacks: media logging, a checkpoint on interruption."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

log = logging.getLogger(__name__)

#: Prior samples use this seed every epoch, so the same z shows how decoding evolves.
MEDIA_SEED = 0


class ImageMedia(Callback):
    """Each validation epoch: inputs above reconstructions, and prior samples, as image grids.

    Logged to W&B (``val/reconstructions``, ``val/samples``) on rank zero; the last
    epoch's grids are also written as PNG files in the run folder. Sampling runs in a
    forked RNG, so turning media on or off does not change training.

    Args:
        every_n_epochs: log every this many validation epochs.
        n: number of examples and samples per grid.
    """

    def __init__(self, every_n_epochs: int = 1, n: int = 16) -> None:
        self.every_n_epochs = every_n_epochs
        self.n = n
        self.inputs: Tensor | None = None

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:  # noqa: ANN001
        if batch_idx == 0 and self.inputs is None:
            self.inputs = batch["x"][: self.n].detach()

    def grids(self, pl_module: LightningModule) -> dict[str, Tensor]:
        from torchvision.utils import make_grid

        x = self.inputs
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(MEDIA_SEED)
            recon = pl_module.reconstruct(x).clamp(0, 1)
            samples = pl_module.sample(len(x)).clamp(0, 1)
        return {
            "val/reconstructions": make_grid(torch.cat([x.float(), recon.float()]), nrow=len(x), pad_value=1.0),
            "val/samples": make_grid(samples.float(), nrow=int(len(x) ** 0.5) or 1, pad_value=1.0),
        }

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            trainer.sanity_checking
            or not trainer.is_global_zero
            or self.inputs is None
            or pl_module.spec.modality != "image"
            or (trainer.current_epoch + 1) % self.every_n_epochs
        ):
            return
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not loggers:
            return
        import wandb

        images = {key: wandb.Image(grid.cpu()) for key, grid in self.grids(pl_module).items()}
        for logger in loggers:
            logger.log_metrics(images, step=trainer.global_step)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or self.inputs is None or pl_module.spec.modality != "image":
            return
        from torchvision.utils import save_image

        for key, grid in self.grids(pl_module).items():
            save_image(grid, Path(trainer.default_root_dir) / f"{key.split('/')[-1]}.png")


class CheckpointOnInterrupt(Callback):
    """On SIGTERM (SLURM preemption, ``kill``) or Ctrl-C, finish the step, save ``last.ckpt``, exit.

    Lightning turns SIGTERM into an exception after the current step, on every DDP rank;
    this callback makes the first Ctrl-C do the same (by sending the process SIGTERM) rather
    than interrupting a step half done, and saves the state there, mid-epoch, data position
    included, so ``resume=RUN_DIR`` continues from that very step. A second Ctrl-C stops at
    once and keeps the last checkpoint on disk.
    """

    def __init__(self) -> None:
        self.previous_handler: Any = None
        self.signal_name = "SIGTERM"

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
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
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        if not trainer.training:  # inside an epoch's validation: its training is not checkpointed yet
            log.warning(
                "interrupted by %s during validation: the last checkpoint stands; continue with genkit-train resume=%s",
                self.signal_name,
                trainer.default_root_dir,
            )
            return
        callback = trainer.checkpoint_callback
        folder = Path(trainer.default_root_dir) / "checkpoints"
        path = (Path(callback.dirpath) if callback and callback.dirpath else folder) / "last.ckpt"
        trainer.save_checkpoint(path)
        log.warning(
            "interrupted by %s at step %d: saved %s; continue with genkit-train resume=%s",
            self.signal_name,
            trainer.global_step,
            path,
            trainer.default_root_dir,
        )
