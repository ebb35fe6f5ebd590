"""``DataSpec``: everything the other parts may know about the data.

A data module builds its spec before any part exists; genkit wires shapes from it,
and the spec travels in every checkpoint so a model loads without its data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import prod
from typing import Any

MODALITIES = ("image", "text", "audio")
SUPPORTS = ("binary", "unit_interval", "real", "categorical")


@dataclass(frozen=True)
class DataSpec:
    """What one example looks like.

    Attributes:
        modality: ``image`` | ``text`` | ``audio``.
        event_shape: shape of one example without the batch: ``(C, H, W)`` for images.
        support: value range of ``x``: ``binary`` ({0, 1}), ``unit_interval`` ([0, 1]),
            ``real``, or ``categorical`` (integer ids).
        variable_length: batches carry a ``mask`` ``[B, T]`` (True = real element).
        extra: modality-specific facts (vocabulary, sample rate, class names...).
    """

    modality: str
    event_shape: tuple[int, ...]
    support: str
    variable_length: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.support not in SUPPORTS:
            raise ValueError(f"support must be one of {SUPPORTS}, got {self.support!r}")
        object.__setattr__(self, "event_shape", tuple(int(d) for d in self.event_shape))

    @property
    def numel(self) -> int:
        """Number of scalar elements in one example (the 'dim' of bits/dim)."""
        return prod(self.event_shape)

    def describe(self) -> str:
        """Short human form, e.g. ``image [1, 28, 28] unit_interval``."""
        return f"{self.modality} {list(self.event_shape)} {self.support}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form stored in checkpoints (loads with ``weights_only=True``)."""
        d = asdict(self)
        d["event_shape"] = list(self.event_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        return cls(**{**d, "event_shape": tuple(d["event_shape"])})
