"""genkit: composable variational autoencoders from registered parts, trained with Lightning.

Importing genkit registers its built-in parts, data modules and model; ``genkit.plugins.load()``
adds installed and local plugins.
"""

from genkit import _moved
from genkit.version import __version__

_moved.install()

from genkit.checkpoint import load  # noqa: E402
from genkit.compose import build_model, compose  # noqa: E402
from genkit.data import ArrayDataModule, DataModule  # noqa: E402  (registers the data modules)
from genkit.errors import GenkitError  # noqa: E402
from genkit.model import VAE  # noqa: E402  (registers the model)
from genkit.parts import WIRING, Decoder, Encoder, Likelihood, Posterior, Prior  # noqa: E402  (registers the parts)
from genkit.registry import (  # noqa: E402
    list_parts,
    register_data,
    register_decoder,
    register_encoder,
    register_likelihood,
    register_model,
    register_posterior,
    register_prior,
)
from genkit.spec import AudioSettings, DataSpec, Vocabulary  # noqa: E402

#: genkit 0.1's modules that moved stay reachable as attributes (``genkit.contract.verify``).
__getattr__ = _moved.moved_module

__all__ = [
    "WIRING",
    "ArrayDataModule",
    "AudioSettings",
    "DataModule",
    "DataSpec",
    "Decoder",
    "Encoder",
    "GenkitError",
    "Likelihood",
    "Posterior",
    "Prior",
    "VAE",
    "Vocabulary",
    "__version__",
    "build_model",
    "compose",
    "list_parts",
    "load",
    "register_data",
    "register_decoder",
    "register_encoder",
    "register_likelihood",
    "register_model",
    "register_posterior",
    "register_prior",
]
