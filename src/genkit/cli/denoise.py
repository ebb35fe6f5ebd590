"""``genkit denoise``: corrupt a split's images, reconstruct them, and score both against the clean ones."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from genkit.cli.trained import SplitOptions, Trained, check_count, check_split
from genkit.console import SUMMARY
from genkit.errors import UsageError
from genkit.modalities import Images, modality_of

NOISES = ("gaussian", "salt_pepper")


@dataclass
class DenoiseOptions(SplitOptions):
    """genkit denoise ckpt=PATH [noise=gaussian] [level=0.3] [n=16] [split=test] [out=FILE] [data.KEY=VALUE ...]"""

    noise: str = "gaussian"  # gaussian: x + N(0, level^2) clipped to [0, 1]; salt_pepper: pixels set to 0 or 1
    level: float = 0.3  # the noise's standard deviation (gaussian) or share of pixels hit (salt_pepper)
    n: int = 16  # examples shown in the image (PSNR/SSIM are over the whole split)


def add_noise(x: torch.Tensor, noise: str, level: float, generator: torch.Generator) -> torch.Tensor:
    """``x`` in [0, 1] corrupted by ``noise`` at ``level`` (see ``DenoiseOptions``), still in [0, 1]."""
    if noise == "gaussian":
        return (x + level * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    hit = torch.rand(x.shape, generator=generator) < level
    salt = (torch.rand(x.shape, generator=generator) < 0.5).to(x.dtype)
    return torch.where(hit, salt, x)


def image_scores(clean: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of ``other`` against ``clean``, images in [0, 1] (torchmetrics).

    The SSIM window is 11x11 (Wang et al. 2004), shrunk to the largest odd size that fits small images."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    window = min(11, *(side - 1 + side % 2 for side in clean.shape[-2:]))
    psnr = peak_signal_noise_ratio(other, clean, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(other, clean, data_range=1.0, kernel_size=window, reduction="none")
    return {"psnr": float(psnr.mean()), "ssim": float(ssim.mean())}


@torch.no_grad()
def run(options: DenoiseOptions) -> Path:
    """Write rows of clean, noisy and denoised examples, and PSNR/SSIM before and after over the
    whole split as JSON beside them; returns the image file."""
    check_count("n", options.n, "examples to show")
    check_split(options.split)
    if options.noise not in NOISES:
        raise UsageError(f"noise must be one of {', '.join(NOISES)}, got {options.noise!r}")
    if not 0 < options.level <= (1 if options.noise == "salt_pepper" else math.inf):
        raise UsageError(f"level must be above 0 (and at most 1 for salt_pepper), got {options.level}")
    trained = Trained.open(options.ckpt)
    modality, spec = modality_of(trained.model.spec), trained.model.spec
    if not isinstance(modality, Images):
        raise UsageError(f"genkit denoise works on image models ([C, H, W] in [0, 1]), not {spec.describe()}")
    datamodule, data_name = trained.data(options.data, seed=options.seed)
    clean = datamodule.examples(options.split)["x"].float()
    noisy = add_noise(clean, options.noise, options.level, torch.Generator().manual_seed(options.seed))
    denoised = torch.cat([trained.model.reconstruct(chunk).clamp(0, 1) for chunk in noisy.split(512)])
    shown = min(options.n, len(clean))
    out = trained.output(options.out, "denoise")
    modality.save(modality.grid(torch.cat([clean[:shown], noisy[:shown], denoised[:shown]]), shown), out)
    result = {
        "checkpoint": trained.source,
        "data": data_name,
        "split": options.split,
        "examples": len(clean),
        "noise": options.noise,
        "level": options.level,
        "noisy": image_scores(clean, noisy),
        "denoised": image_scores(clean, denoised),
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    SUMMARY.info(
        "%s noise at %s on %d %s images: PSNR %.2f -> %.2f dB, SSIM %.3f -> %.3f; rows clean/noisy/denoised in %s",
        options.noise,
        options.level,
        len(clean),
        options.split,
        result["noisy"]["psnr"],
        result["denoised"]["psnr"],
        result["noisy"]["ssim"],
        result["denoised"]["ssim"],
        out,
    )
    return out
