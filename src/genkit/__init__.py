"""genkit: composable variational autoencoders from registered parts, trained with Lightning.

Importing genkit registers its built-in parts; ``genkit.plugins.load()`` adds
installed and local plugins.
"""

__version__ = "0.1.0"

from genkit import builtins as _builtins  # noqa: E402,F401  (registration)
from genkit.checkpoint import load  # noqa: E402
from genkit.compose import build_model, compose  # noqa: E402
from genkit.data.base import ArrayDataModule, DataModule  # noqa: E402
from genkit.errors import GenkitError  # noqa: E402
from genkit.model import VAE  # noqa: E402
from genkit.parts import WIRING, Decoder, Encoder, Likelihood, Posterior, Prior  # noqa: E402
from genkit.registry import (  # noqa: E402
    list_parts,
    register_data,
    register_decoder,
    register_encoder,
    register_likelihood,
    register_posterior,
    register_prior,
)
from genkit.spec import DataSpec  # noqa: E402

__all__ = [
    "WIRING",
    "ArrayDataModule",
    "DataModule",
    "DataSpec",
    "Decoder",
    "Encoder",
    "GenkitError",
    "Likelihood",
    "Posterior",
    "Prior",
    "VAE",
    "build_model",
    "compose",
    "list_parts",
    "load",
    "register_data",
    "register_decoder",
    "register_encoder",
    "register_likelihood",
    "register_posterior",
    "register_prior",
]
