"""One object per modality of data, chosen once from the spec: what genkit shows of a model
while it trains (W&B media, files at the end), what the tools write (images, sentences, WAV
files) and the distances it measures between inputs and reconstructions.

``modality_of(spec)`` gives ``Images`` (``[C, H, W]`` images), ``Text`` (token sequences) or
``Audio`` (genkit's audio settings), and None for data genkit cannot show (a plugin's own
kind of examples): those models train and evaluate as any other, from Python and the CLI,
but have no media and no tool outputs.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from genkit.audio import AudioFeatures, spectrogram_images, write_wavs
from genkit.spec import DataSpec

log = logging.getLogger(__name__)


@dataclass
class Examples:
    """Model-space examples to show: inputs (with their mask), their reconstructions and prior samples."""

    inputs: Tensor
    mask: Tensor | None
    reconstructions: Tensor
    samples: Tensor


class Modality(nn.Module, ABC):
    """What genkit shows of, writes for and measures on one modality of data.

    A Module so that feature buffers (audio's mel filters) move with the model to its device.

    Attributes:
        suffix: what a tool writes: ``.png``, ``.txt``, or empty for a folder of files.
        distance_names: reconstruction distances summed in validation and test (``distances``).
        console: the media are also printed to the console each validation epoch.
    """

    suffix: ClassVar[str]
    distance_names: ClassVar[tuple[str, ...]] = ()
    console: ClassVar[bool] = False

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        self.spec = spec

    def distances(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """Per example ``[B, len(distance_names)]`` between inputs and their reconstructions."""
        raise NotImplementedError(f"{type(self).__name__} measures no reconstruction distances")

    def media_count(self, n: int, n_audio: int) -> int:
        """How many examples of each kind the media callback shows (``n``, or ``n_audio`` clips)."""
        return n

    @abstractmethod
    def write_samples(self, path: Path, samples: Tensor) -> None:
        """A tool's prior samples, written to ``path``."""

    @abstractmethod
    def write_reconstructions(self, path: Path, inputs: Tensor, mask: Tensor | None, outputs: Tensor) -> None:
        """Inputs beside their reconstructions, written to ``path``."""

    @abstractmethod
    def write_interpolations(self, path: Path, ends: Tensor, mask: Tensor | None, paths: dict[str, Tensor]) -> None:
        """Decoded paths between two examples (``ends``, in order), one per named path."""

    @abstractmethod
    def log_media(self, loggers: list[Any], step: int, epoch: int, examples: Examples) -> None:
        """One validation epoch's media, to the W&B loggers (and the console where ``console``)."""

    @abstractmethod
    def save_media(self, folder: Path, examples: Examples) -> None:
        """The last media of a training run, as files in its run folder."""


class Images(Modality):
    """Image grids: inputs above reconstructions, prior samples, rows of decoded paths."""

    suffix = ".png"

    @staticmethod
    def grid(images: Tensor, columns: int) -> Tensor:
        from torchvision.utils import make_grid

        return make_grid(images.float().clamp(0, 1).cpu(), nrow=columns, pad_value=1.0)

    def pairs(self, examples: Examples) -> Tensor:
        return self.grid(torch.cat([examples.inputs, examples.reconstructions]), len(examples.inputs))

    @staticmethod
    def save(grid: Tensor, path: Path) -> None:
        from torchvision.utils import save_image

        save_image(grid, path)

    def write_samples(self, path: Path, samples: Tensor) -> None:
        self.save(self.grid(samples, math.ceil(math.sqrt(len(samples)))), path)

    def write_reconstructions(self, path: Path, inputs: Tensor, mask: Tensor | None, outputs: Tensor) -> None:
        self.save(self.grid(torch.cat([inputs, outputs]), len(inputs)), path)

    def write_interpolations(self, path: Path, ends: Tensor, mask: Tensor | None, paths: dict[str, Tensor]) -> None:
        rows = [torch.cat([ends[:1], decoded.clamp(0, 1), ends[1:]]) for decoded in paths.values()]
        self.save(self.grid(torch.cat(rows), len(rows[0])), path)

    def log_media(self, loggers: list[Any], step: int, epoch: int, examples: Examples) -> None:
        import wandb

        samples = examples.samples
        media = {
            "val/reconstructions": wandb.Image(self.pairs(examples)),
            "val/samples": wandb.Image(self.grid(samples, int(len(samples) ** 0.5) or 1)),
        }
        for logger in loggers:
            logger.log_metrics(media, step=step)

    def save_media(self, folder: Path, examples: Examples) -> None:
        self.save(self.pairs(examples), folder / "reconstructions.png")
        self.save(self.grid(examples.samples, int(len(examples.samples) ** 0.5) or 1), folder / "samples.png")


class Text(Modality):
    """Sentences: token ids decoded with the spec's tokenizer, as text files and W&B tables."""

    suffix = ".txt"
    console = True

    def sentences(self, ids: Tensor, mask: Tensor | None = None) -> list[str]:
        from genkit.data.text import decode_tokens  # the data package imports Lightning: not for `genkit --help`

        return decode_tokens(self.spec, ids, mask)

    def pairs(self, inputs: Tensor, mask: Tensor | None, outputs: Tensor) -> list[str]:
        """``input\\n  -> reconstruction`` for each example."""
        return [f"{a}\n  -> {b}" for a, b in zip(self.sentences(inputs, mask), self.sentences(outputs))]

    @staticmethod
    def write_lines(path: Path, lines: list[str]) -> None:
        path.write_text("\n".join(lines) + "\n")

    def write_samples(self, path: Path, samples: Tensor) -> None:
        self.write_lines(path, self.sentences(samples))

    def write_reconstructions(self, path: Path, inputs: Tensor, mask: Tensor | None, outputs: Tensor) -> None:
        self.write_lines(path, self.pairs(inputs, mask, outputs))

    def write_interpolations(self, path: Path, ends: Tensor, mask: Tensor | None, paths: dict[str, Tensor]) -> None:
        """Bowman et al. (2016)'s homotopies: the greedy decodes along each path, between its ends."""
        start, end = self.sentences(ends, mask)
        lines = []
        for name, decoded in paths.items():
            lines += [f"# {name}", f"   {start}", *self.sentences(decoded), f"   {end}", ""]
        self.write_lines(path, lines)

    def log_media(self, loggers: list[Any], step: int, epoch: int, examples: Examples) -> None:
        samples = self.sentences(examples.samples)
        log.info("epoch %d samples from the prior:\n  %s", epoch, "\n  ".join(samples[:3]))
        inputs = self.sentences(examples.inputs, examples.mask)
        pairs = [[a, b] for a, b in zip(inputs, self.sentences(examples.reconstructions))]
        for logger in loggers:
            logger.log_text("val/reconstructions", columns=["input", "reconstruction"], data=pairs, step=step)
            logger.log_text("val/samples", columns=["sample"], data=[[t] for t in samples], step=step)

    def save_media(self, folder: Path, examples: Examples) -> None:
        samples = "\n".join(self.sentences(examples.samples))
        pairs = "\n".join(self.pairs(examples.inputs, examples.mask, examples.reconstructions))
        (folder / "samples.txt").write_text(f"# prior samples\n{samples}\n\n# input -> reconstruction\n{pairs}\n")


class Audio(Modality):
    """Clips to listen to (log-mel turned into sound by Griffin-Lim) and their spectrograms, and the
    mel L1 distance and spectral convergence between inputs and reconstructions."""

    suffix = ""
    distance_names = ("mel_l1", "spectral_convergence")

    def __init__(self, spec: DataSpec) -> None:
        super().__init__(spec)
        self.features = AudioFeatures.of(spec)

    def distances(self, x: Tensor, x_hat: Tensor) -> Tensor:
        return self.features.distances(x, x_hat)

    def media_count(self, n: int, n_audio: int) -> int:
        return n_audio

    def spectrograms(self, rows: list[Tensor], columns: int) -> Tensor:
        """Spectrogram images of ``rows`` of examples as one grid of ``columns`` per row."""
        from torchvision.utils import make_grid

        images = torch.cat([spectrogram_images(self.features, row) for row in rows])
        return make_grid(images, nrow=columns, pad_value=1.0)

    def write_rows(self, folder: Path, rows: dict[str, Tensor], digits: int = 3) -> None:
        """One WAV file per example (``<row>_<i>.wav``) and the rows' spectrograms as ``spectrograms.png``."""
        from torchvision.utils import save_image

        rate = self.features.settings.sample_rate
        clips = {
            f"{row}_{i:0{digits}d}": wave for row, x in rows.items() for i, wave in enumerate(self.features.to_audio(x))
        }
        write_wavs(folder, clips, rate)
        save_image(self.spectrograms(list(rows.values()), len(next(iter(rows.values())))), folder / "spectrograms.png")

    def write_samples(self, path: Path, samples: Tensor) -> None:
        self.write_rows(path, {"sample": samples})

    def write_reconstructions(self, path: Path, inputs: Tensor, mask: Tensor | None, outputs: Tensor) -> None:
        self.write_rows(path, {"input": inputs, "reconstruction": outputs})

    def write_interpolations(self, path: Path, ends: Tensor, mask: Tensor | None, paths: dict[str, Tensor]) -> None:
        self.write_rows(path, {name: torch.cat([ends[:1], decoded, ends[1:]]) for name, decoded in paths.items()})

    def grids(self, examples: Examples) -> dict[str, Tensor]:
        count = len(examples.inputs)
        return {
            "val/reconstructions": self.spectrograms([examples.inputs, examples.reconstructions], count),
            "val/samples": self.spectrograms([examples.samples], count),
        }

    def clips(self, examples: Examples) -> dict[str, Any]:
        kinds = {"inputs": examples.inputs, "reconstructions": examples.reconstructions, "samples": examples.samples}
        return {name: self.features.to_audio(x) for name, x in kinds.items()}

    def log_media(self, loggers: list[Any], step: int, epoch: int, examples: Examples) -> None:
        import wandb

        rate = self.features.settings.sample_rate
        media: dict[str, Any] = {key: wandb.Image(grid) for key, grid in self.grids(examples).items()}
        for name, waves in self.clips(examples).items():
            media[f"val/audio/{name}"] = [
                wandb.Audio(wave, sample_rate=rate, caption=f"{name} {i}") for i, wave in enumerate(waves)
            ]
        for logger in loggers:
            logger.log_metrics(media, step=step)

    def save_media(self, folder: Path, examples: Examples) -> None:
        from torchvision.utils import save_image

        clips = self.clips(examples)
        named = {f"{what[:-1]}_{i:02d}": wave for what, waves in clips.items() for i, wave in enumerate(waves)}
        write_wavs(folder / "audio", named, self.features.settings.sample_rate)
        for key, grid in self.grids(examples).items():
            save_image(grid, folder / f"{key.split('/')[-1]}.png")


def modality_of(spec: DataSpec) -> Modality | None:
    """The modality object of ``spec``; None for data genkit cannot show (see the module's docstring)."""
    if spec.modality == "text":
        return Text(spec)
    if spec.audio is not None:
        return Audio(spec)
    if spec.modality == "image" and len(spec.event_shape) == 3:
        return Images(spec)
    return None
