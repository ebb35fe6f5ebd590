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


class Media(Callback):
    """Each validation epoch, what the model makes of data: inputs beside reconstructions, and prior samples.

    Images: grids (``val/reconstructions``, ``val/samples``). Text: tables of input ->
    reconstruction pairs and of sampled sentences (greedy decoding from z; the console
    shows a few each epoch). Audio: clips to listen to (``val/audio/inputs``,
    ``val/audio/reconstructions``, ``val/audio/samples``; log-mel turned into sound by
    Griffin-Lim) and their spectrograms as grids. Logged to W&B on rank zero; at the end of
    training the last grids are written as PNG files, the sentences as ``samples.txt``, the
    clips as WAV files under ``audio/``, in the run folder.
    Sampling runs in a forked RNG, so turning media on or off does not change training.

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

    def outputs(self, pl_module: LightningModule, n: int | None = None) -> tuple[Tensor, Tensor]:
        """Reconstructions of the (first ``n``) kept inputs and as many prior samples, drawn with a fixed seed."""
        x, mask = self.inputs["x"][:n], self.inputs.get("mask")
        mask = mask[:n] if mask is not None else None
        devices = [x.device] if x.device.type == "cuda" else []
        training = pl_module.training
        pl_module.eval()  # no dropout: what a reloaded model would produce
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(MEDIA_SEED)
                return pl_module.reconstruct(x, mask), pl_module.sample(len(x))
        finally:
            pl_module.train(training)

    def grids(self, pl_module: LightningModule) -> dict[str, Tensor]:
        from torchvision.utils import make_grid

        x = self.inputs["x"]
        recon, samples = (t.clamp(0, 1).float() for t in self.outputs(pl_module))
        return {
            "val/reconstructions": make_grid(torch.cat([x.float(), recon]), nrow=len(x), pad_value=1.0),
            "val/samples": make_grid(samples, nrow=int(len(x) ** 0.5) or 1, pad_value=1.0),
        }

    def sentences(self, pl_module: LightningModule) -> dict[str, list[str]]:
        from genkit.data.text import decode_tokens

        spec = pl_module.spec
        recon, samples = self.outputs(pl_module)
        return {
            "input": decode_tokens(spec, self.inputs["x"], self.inputs.get("mask")),
            "reconstruction": decode_tokens(spec, recon),
            "sample": decode_tokens(spec, samples),
        }

    def sounds(self, pl_module: LightningModule) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Spectrogram grids (inputs over reconstructions; samples) and the clips as waveforms."""
        from torchvision.utils import make_grid

        from genkit.audio import spectrogram_images

        features = pl_module.audio
        x = self.inputs["x"][: self.n_audio]
        recon, samples = self.outputs(pl_module, len(x))
        images = [spectrogram_images(features, t) for t in (x, recon, samples)]
        grids = {
            "val/reconstructions": make_grid(torch.cat(images[:2]), nrow=len(x), pad_value=1.0),
            "val/samples": make_grid(images[2], nrow=len(x), pad_value=1.0),
        }
        clips = {
            name: features.to_audio(t) for name, t in (("inputs", x), ("reconstructions", recon), ("samples", samples))
        }
        return grids, clips

    @staticmethod
    def kind(pl_module: LightningModule) -> str | None:
        """``text``, ``audio`` (genkit's audio settings), ``image`` ([C, H, W]) or None: nothing to show."""
        spec = pl_module.spec
        if spec.modality == "text":
            return "text"
        if pl_module.audio is not None:
            return "audio"
        return "image" if spec.modality == "image" and len(spec.event_shape) == 3 else None

    def due(self, trainer: Trainer, pl_module: LightningModule) -> bool:
        return (
            trainer.state.fn == "fit"
            and not trainer.sanity_checking
            and trainer.is_global_zero
            and self.inputs is not None
            and self.kind(pl_module) is not None
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.due(trainer, pl_module):
            return
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if self.kind(pl_module) == "text":
            texts = self.sentences(pl_module)
            log.info("epoch %d samples from the prior:\n  %s", trainer.current_epoch, "\n  ".join(texts["sample"][:3]))
            for logger in loggers:
                pairs = [[a, b] for a, b in zip(texts["input"], texts["reconstruction"])]
                step = trainer.global_step
                logger.log_text("val/reconstructions", columns=["input", "reconstruction"], data=pairs, step=step)
                logger.log_text("val/samples", columns=["sample"], data=[[t] for t in texts["sample"]], step=step)
            return
        if not loggers:
            return
        import wandb

        if self.kind(pl_module) == "audio":
            grids, clips = self.sounds(pl_module)
            rate = pl_module.audio.settings.sample_rate
            media: dict[str, Any] = {key: wandb.Image(grid) for key, grid in grids.items()}
            for name, waves in clips.items():
                media[f"val/audio/{name}"] = [
                    wandb.Audio(wave, sample_rate=rate, caption=f"{name} {i}") for i, wave in enumerate(waves)
                ]
        else:
            media = {key: wandb.Image(grid.cpu()) for key, grid in self.grids(pl_module).items()}
        for logger in loggers:
            logger.log_metrics(media, step=trainer.global_step)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        kind = self.kind(pl_module)
        if not trainer.is_global_zero or self.inputs is None or kind is None:
            return
        folder = Path(trainer.default_root_dir)
        if kind == "text":
            texts = self.sentences(pl_module)
            pairs = "\n".join(f"{a}\n  -> {b}" for a, b in zip(texts["input"], texts["reconstruction"]))
            samples = "\n".join(texts["sample"])
            (folder / "samples.txt").write_text(f"# prior samples\n{samples}\n\n# input -> reconstruction\n{pairs}\n")
            return
        from torchvision.utils import save_image

        if kind == "audio":
            from genkit.audio import write_wavs

            grids, clips = self.sounds(pl_module)
            rate = pl_module.audio.settings.sample_rate
            named = {f"{what[:-1]}_{i:02d}": wave for what, waves in clips.items() for i, wave in enumerate(waves)}
            write_wavs(folder / "audio", named, rate)
        else:
            grids = self.grids(pl_module)
        for key, grid in grids.items():
            save_image(grid, folder / f"{key.split('/')[-1]}.png")


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
