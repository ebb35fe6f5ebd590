"""Importing this module registers every built-in part (and the model config)."""

from genkit import (  # noqa: F401
    data,  # noqa: F401
    decoders,
    encoders,
    likelihoods,
    posteriors,
    priors,
    sequences,
)
from genkit.plugins import store_model_config

store_model_config()
