"""genkit: composable variational autoencoders from registered parts, trained with Lightning.

The public names below are imported on first use, so that a command that only prints help or
lists parts does not pay for Lightning. Looking up a registry registers genkit's built-in parts,
data modules and model; ``genkit.plugins.load()`` adds installed and local plugins.
"""

import importlib
from typing import TYPE_CHECKING

from genkit import _moved
from genkit.version import __version__

_moved.install()

if TYPE_CHECKING:  # what type checkers, editors and the API reference read (tests keep it equal to PUBLIC)
    from genkit.checkpoint import load
    from genkit.compose import build_model, compose
    from genkit.data import ArrayDataModule, DataModule
    from genkit.errors import GenkitError
    from genkit.model import VAE
    from genkit.parts import WIRING, Decoder, Encoder, Likelihood, Posterior, Prior
    from genkit.registry import (
        list_parts,
        register_data,
        register_decoder,
        register_encoder,
        register_likelihood,
        register_model,
        register_posterior,
        register_prior,
    )
    from genkit.spec import AudioSettings, DataSpec, Vocabulary

#: Each public name -> the module that defines it.
PUBLIC = {
    "load": "genkit.checkpoint",
    "build_model": "genkit.compose",
    "compose": "genkit.compose",
    "ArrayDataModule": "genkit.data",
    "DataModule": "genkit.data",
    "GenkitError": "genkit.errors",
    "VAE": "genkit.model",
    **dict.fromkeys(["WIRING", "Decoder", "Encoder", "Likelihood", "Posterior", "Prior"], "genkit.parts"),
    **dict.fromkeys(
        [
            "list_parts",
            "register_data",
            "register_decoder",
            "register_encoder",
            "register_likelihood",
            "register_model",
            "register_posterior",
            "register_prior",
        ],
        "genkit.registry",
    ),
    **dict.fromkeys(["AudioSettings", "DataSpec", "Vocabulary"], "genkit.spec"),
}


def __getattr__(name: str) -> object:
    """A public name, imported on first use; else a genkit 0.1 module that moved (``genkit.contract``)."""
    if name in PUBLIC:
        value = getattr(importlib.import_module(PUBLIC[name]), name)
        globals()[name] = value
        return value
    return _moved.moved_module(name)


def __dir__() -> list[str]:
    return sorted([*globals(), *PUBLIC])


__all__ = [*sorted(PUBLIC), "__version__"]
