"""``genkit sample``: draws from the prior, decoded (an image grid, sentences, or WAV files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from genkit.cli.trained import CheckpointOptions, Trained, check_count
from genkit.console import SUMMARY
from genkit.errors import UsageError


@dataclass
class SampleOptions(CheckpointOptions):
    """genkit sample ckpt=PATH [n=64] [temperature=1] [out=FILE] [method=greedy] [top_p=1] [token_temperature=1]"""

    n: int = 64  # number of prior samples
    temperature: float = 1.0  # scales z ~ p(z): below 1 gives more typical, less varied samples
    method: str = "greedy"  # text: greedy (most likely word) or sample (drawn word by word)
    top_p: float = 1.0  # text, method=sample: draw from the smallest set of words holding this mass (nucleus)
    token_temperature: float = 1.0  # text, method=sample: softmax temperature of each word draw


def run(options: SampleOptions) -> Path:
    """Draw prior samples and write them beside the checkpoint (``out``); returns the file or folder."""
    check_count("n", options.n, "samples to draw")
    trained = Trained.open(options.ckpt)
    modality = trained.modality("sample")
    torch.manual_seed(options.seed)
    generation = {}
    if trained.model.decoder.autoregressive:
        generation = {"method": options.method, "top_p": options.top_p, "token_temperature": options.token_temperature}
    try:
        samples = trained.model.sample(options.n, options.temperature, **generation)
    except ValueError as error:  # generation options the decoder refuses
        raise UsageError(str(error)) from None
    out = trained.output(options.out, "samples", modality.suffix)
    modality.write_samples(out, samples)
    SUMMARY.info("%d samples (temperature %s) written to %s", options.n, options.temperature, out)
    return out
