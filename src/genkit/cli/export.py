"""``genkit export``: a trained decoder or encoder as ONNX or TorchScript, checked against PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from genkit.cli.trained import CheckpointOptions, Trained
from genkit.console import SUMMARY
from genkit.errors import UsageError
from genkit.export import FORMATS, OUTPUTS, PARTS, TOLERANCE, export


@dataclass
class ExportOptions(CheckpointOptions):
    """genkit export ckpt=PATH [format=onnx|torchscript] [part=decoder|encoder] [output=mean|params] [out=FILE]"""

    format: str = "onnx"  # onnx (ONNX Runtime, web, TensorRT) or torchscript (LibTorch, mobile)
    part: str = "decoder"  # decoder: z -> output; encoder: x -> mean and stddev of q(z|x)
    output: str = "mean"  # decoder: mean (E[x|z]) or params (the likelihood's parameters)


def run(options: ExportOptions) -> Path:
    """Export the part beside the checkpoint (``out``) with its JSON description; returns the file."""
    for name, value, allowed in (
        ("format", options.format, FORMATS),
        ("part", options.part, PARTS),
        ("output", options.output, OUTPUTS),
    ):
        if value not in allowed:
            raise UsageError(f"{name} must be {' or '.join(allowed)}, got {value!r}")
    trained = Trained.open(options.ckpt)
    torch.manual_seed(options.seed)
    out = trained.output(options.out, options.part, FORMATS[options.format])
    exported = export(trained.model, options.part, options.format, out, options.output, trained.source)
    SUMMARY.info(
        "%s written to %s (description: %s); checked with %s: largest difference from PyTorch %.1e "
        "on batches of 8 and 3 (tolerance %g)",
        options.part,
        exported.path,
        exported.description,
        exported.runtime,
        exported.difference,
        TOLERANCE,
    )
    return exported.path
