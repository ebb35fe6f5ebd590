"""Using a trained model from the command line: ``genkit sample`` and ``genkit reconstruct``.

Options are ``key=value`` words checked against typed dataclasses (OmegaConf structured
configs), so an unknown option or a wrong type is refused with the key named.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from genkit.errors import UsageError

log = logging.getLogger(__name__)


@dataclass
class SampleOptions:
    """genkit sample ckpt=PATH [n=64] [temperature=1.0] [seed=0] [out=FILE]"""

    ckpt: str = MISSING  # the checkpoint
    n: int = 64  # number of prior samples
    temperature: float = 1.0  # scales z ~ p(z): below 1 gives more typical, less varied samples
    seed: int = 0  # seeds the draws
    out: str = ""  # output file; default: <checkpoint>.samples.png beside it


@dataclass
class ReconstructOptions:
    """genkit reconstruct ckpt=PATH [n=16] [split=test] [out=FILE] [data.KEY=VALUE ...]"""

    ckpt: str = MISSING  # the checkpoint
    n: int = 16  # examples to reconstruct (the first n of the split)
    split: str = "test"  # train | val | test
    seed: int = 0  # seeds the data module's binarisation, if any
    out: str = ""  # output file; default: <checkpoint>.reconstructions.png beside it
    data: dict[str, Any] = field(default_factory=dict)  # changes to the checkpoint's data config


def parse(schema: type, words: list[str]) -> Any:
    """``key=value`` words merged onto ``schema``; mistakes become a UsageError naming the key."""
    try:
        options = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(words))
        OmegaConf.to_container(options, throw_on_missing=True)
    except OmegaConfBaseException as error:
        raise UsageError(str(error).splitlines()[0]) from None
    return options


def default_output(ckpt: str, out: str, name: str) -> Path:
    path = Path(out) if out else Path(ckpt).with_name(f"{Path(ckpt).stem}.{name}.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def require_images(model: Any, command: str) -> None:
    if model.spec.modality != "image":
        raise UsageError(f"genkit {command} writes image grids; this model is for {model.spec.describe()}")


def sample(words: list[str]) -> Path:
    """Draw prior samples and write them as an image grid; returns the file."""
    from torchvision.utils import save_image

    from genkit.checkpoint import load

    options = parse(SampleOptions, words)
    if options.n < 1:
        raise UsageError(f"n must be at least 1 (samples to draw), got {options.n}")
    model = load(options.ckpt)
    require_images(model, "sample")
    torch.manual_seed(options.seed)
    images = model.sample(options.n, options.temperature).clamp(0, 1)
    out = default_output(options.ckpt, options.out, "samples")
    save_image(images, out, nrow=math.ceil(math.sqrt(options.n)), pad_value=1.0)
    log.info("%d samples (temperature %s) written to %s", options.n, options.temperature, out)
    return out


def reconstruct(words: list[str]) -> Path:
    """Write the first ``n`` examples of a split above their reconstructions; returns the file."""
    from torchvision.utils import save_image

    from genkit.checkpoint import model_from_checkpoint, read_checkpoint
    from genkit.evaluate import checkpoint_data

    options = parse(ReconstructOptions, words)
    if options.n < 1:
        raise UsageError(f"n must be at least 1 (examples to reconstruct), got {options.n}")
    if options.split not in ("train", "val", "test"):
        raise UsageError(f"split must be train, val or test, got {options.split!r}")
    checkpoint, run_cfg = read_checkpoint(options.ckpt)
    model = model_from_checkpoint(checkpoint, run_cfg, options.ckpt)
    require_images(model, "reconstruct")
    run_cfg.seed = options.seed
    datamodule, _ = checkpoint_data(run_cfg, model, options.data)
    x = datamodule.splits[options.split]["x"][: options.n].cpu()
    images = torch.cat([x, model.reconstruct(x).clamp(0, 1)])
    out = default_output(options.ckpt, options.out, "reconstructions")
    save_image(images, out, nrow=len(x), pad_value=1.0)
    log.info("%d %s examples (top) and their reconstructions (bottom) written to %s", len(x), options.split, out)
    return out
