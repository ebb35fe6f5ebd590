"""``genkit interpolate``: decoded paths between two examples' latents, linear and spherical."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from genkit.cli.trained import SplitOptions, Trained, check_count, check_split
from genkit.console import SUMMARY
from genkit.errors import UsageError

PATHS = ("linear", "slerp", "both")


@dataclass
class InterpolateOptions(SplitOptions):
    """genkit interpolate ckpt=PATH [a=0] [b=1] [split=test] [steps=8] [path=both] [out=FILE] [data.KEY=VALUE ...]"""

    a: int = 0  # index of the first example in the split
    b: int = 1  # index of the second example
    steps: int = 8  # decoded points between (and including) the two latents
    path: str = "both"  # linear | slerp (spherical, White 2016) | both (one row each)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents ``a`` and ``b`` ``[D]`` at fractions ``t`` ``[T]`` -> ``[T, D]``.

    Follows the great circle between the two directions (White 2016, "Sampling generative
    networks"), staying where Gaussian latents have their mass; linear when they are parallel.
    """
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if torch.sin(omega).abs() < 1e-6:
        return torch.lerp(a, b, t[:, None])
    return (torch.sin((1 - t) * omega)[:, None] * a + torch.sin(t * omega)[:, None] * b) / torch.sin(omega)


@torch.no_grad()
def run(options: InterpolateOptions) -> Path:
    """Decode paths between two examples' latents (for text: Bowman et al. (2016)'s homotopies);
    returns the file or folder."""
    check_count("steps", options.steps, "points along each path")
    check_split(options.split)
    if options.path not in PATHS:
        raise UsageError(f"path must be linear, slerp or both, got {options.path!r}")
    trained = Trained.open(options.ckpt)
    model, modality = trained.model, trained.modality("interpolate")
    datamodule, _ = trained.data(options.data, seed=options.seed)
    for name in ("a", "b"):
        if options[name] < 0:
            raise UsageError(
                f"{name} is an example's index in the {options.split} split: 0 or more, got {options[name]}"
            )
    split = datamodule.examples(options.split, max(options.a, options.b) + 1)
    x = split["x"]
    for name in ("a", "b"):
        if options[name] >= len(x):
            raise UsageError(f"{name}={options[name]} is outside the {options.split} split (0 to {len(x) - 1})")
    ends = x[[options.a, options.b]]
    mask = split["mask"][[options.a, options.b]] if "mask" in split else None
    z_a, z_b = model.embed(ends, mask)
    t = torch.linspace(0, 1, options.steps)
    latents = {"linear": torch.lerp(z_a, z_b, t[:, None]), "slerp": slerp(z_a, z_b, t)}
    names = ["linear", "slerp"] if options.path == "both" else [options.path]
    out = trained.output(options.out, "interpolation", modality.suffix)
    modality.write_interpolations(out, ends, mask, {name: model.decode_output(latents[name]) for name in names})
    SUMMARY.info(
        "%s path(s) between %s examples %d and %d written to %s", options.path, options.split, options.a, options.b, out
    )
    return out
