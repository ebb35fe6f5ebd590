"""``genkit reconstruct``: the first examples of a split beside their reconstructions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genkit.cli.trained import SplitOptions, Trained, check_count, check_split
from genkit.console import SUMMARY


@dataclass
class ReconstructOptions(SplitOptions):
    """genkit reconstruct ckpt=PATH [n=16] [split=test] [out=FILE] [data.KEY=VALUE ...]"""

    n: int = 16  # examples to reconstruct (the first n of the split)


def run(options: ReconstructOptions) -> Path:
    """Write the first ``n`` examples of a split with their reconstructions; returns the file or folder."""
    check_count("n", options.n, "examples to reconstruct")
    check_split(options.split)
    trained = Trained.open(options.ckpt)
    modality = trained.modality("reconstruct")
    datamodule, _ = trained.data(options.data, seed=options.seed)
    split = datamodule.examples(options.split, options.n)
    x, mask = split["x"], split.get("mask")
    out = trained.output(options.out, "reconstructions", modality.suffix)
    modality.write_reconstructions(out, x, mask, trained.model.reconstruct(x, mask))
    SUMMARY.info("%d %s examples and their reconstructions written to %s", len(x), options.split, out)
    return out
