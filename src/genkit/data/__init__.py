"""Data modules by modality; importing this package registers the built-in ones."""

from genkit.data import audio, images, shards, text  # noqa: F401  (registration)
from genkit.data.base import ArrayDataModule, DataModule, TensorBatches

__all__ = ["ArrayDataModule", "DataModule", "TensorBatches"]
