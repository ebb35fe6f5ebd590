"""The model parts, by kind: the contracts every part honours (``genkit.parts.base``) and every
built-in encoder, posterior, prior, decoder and likelihood, one module per kind.

Importing this package registers the built-in parts.
"""

from genkit.parts.base import Decoder, Encode, EncodeFn, Encoder, Likelihood, Part, Posterior, Prior, verify
from genkit.parts.layers import ACTIVATIONS, make_activation
from genkit.registry import WIRING

# isort: off
# Registration checks each class against the contracts above (``genkit.parts.Encoder``...): they come first.
from genkit.parts import decoders, encoders, likelihoods, posteriors, priors  # noqa: E402,F401
# isort: on

__all__ = [
    "ACTIVATIONS",
    "WIRING",
    "Decoder",
    "Encode",
    "EncodeFn",
    "Encoder",
    "Likelihood",
    "Part",
    "Posterior",
    "Prior",
    "make_activation",
    "verify",
]
