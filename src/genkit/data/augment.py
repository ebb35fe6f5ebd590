"""Training-time augmentation: drawn per batch, on the device the batch is on, from a generator seeded
by the run's seed, the epoch and the batch's place in it, so a run and its resumption after a kill
draw the same, and evaluation never draws at all."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from genkit.errors import DataError
from genkit.spec import DataSpec


@dataclass(frozen=True)
class Augment:
    """What training batches get; all off by default.

    Attributes:
        flip: images mirrored left to right, each with probability 1/2.
        crop: images padded by this many pixels (edges repeated) and cropped back to their size at a
            random place: shifts of up to ``crop`` pixels each way (the CIFAR convention is 4).
        offset: audio clips cut from a random place in the first ``offset`` samples of each stored
            clip (stored that much longer); evaluation cuts them at the start.
    """

    flip: bool = False
    crop: int = 0
    offset: int = 0

    @property
    def active(self) -> bool:
        return self.flip or self.crop > 0 or self.offset > 0

    def check(self, spec: DataSpec) -> None:
        """Refuse options that do not apply to ``spec``'s examples."""
        if self.crop < 0 or self.offset < 0:
            raise DataError(f"data.crop and data.offset must be 0 or more, got {self.crop} and {self.offset}")
        if (self.flip or self.crop) and (spec.modality != "image" or len(spec.event_shape) != 3):
            raise DataError(f"data.flip and data.crop augment images; this data set holds {spec.modality}")
        if self.crop and self.crop >= min(spec.event_shape[1:]):
            raise DataError(f"data.crop={self.crop} must be smaller than the images ({spec.event_shape[1:]})")

    @staticmethod
    def generator(seed: int, epoch: int, batch: int, device: torch.device) -> torch.Generator:
        """The draws of one training batch: a function of where it is in the run, nothing else."""
        return torch.Generator(device=device).manual_seed(hash((seed, epoch, batch)) & (2**63 - 1))

    def images(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """``[B, C, H, W]`` images flipped and shifted, each by its own draw."""
        n, _, height, width = x.shape
        if self.flip:
            flipped = torch.rand(n, generator=generator, device=x.device) < 0.5
            x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
        if self.crop:
            padded = F.pad(x, (self.crop,) * 4, mode="replicate").permute(0, 2, 3, 1)
            top, left = torch.randint(0, 2 * self.crop + 1, (2, n), generator=generator, device=x.device)
            rows = top[:, None, None] + torch.arange(height, device=x.device)[None, :, None]
            cols = left[:, None, None] + torch.arange(width, device=x.device)[None, None, :]
            x = padded[torch.arange(n, device=x.device)[:, None, None], rows, cols].permute(0, 3, 1, 2).contiguous()
        return x

    def window(self, clips: Tensor, length: int, generator: torch.Generator | None) -> Tensor:
        """``[B, length]`` cut from ``[B, L]`` clips: at a random start in the first ``offset`` samples
        with a generator (training), at the start without one."""
        if generator is None or not self.offset:
            return clips[:, :length]
        last = min(self.offset, clips.shape[1] - length)
        start = torch.randint(0, last + 1, (len(clips),), generator=generator, device=clips.device)
        return clips.gather(1, start[:, None] + torch.arange(length, device=clips.device)[None, :])
