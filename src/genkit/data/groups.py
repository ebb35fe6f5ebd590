"""Several training batches per Lightning batch (``trainer.steps_per_execution``, Keras's name for it).

Lightning spends ~0.3 ms of host time on every batch it runs (hooks of the module and of every
callback, the fetcher, logging bookkeeping), whatever the model. With ``steps_per_execution=K``
genkit-train hands Lightning one ``StepGroup`` of K consecutive batches of the same loader, and the
model takes one optimiser step per batch of the group, in order: the data, its order, every
optimiser step and the random stream are those of K=1, while Lightning's per-batch cost is paid once
per K steps. What counts batches in Lightning (the progress bar, ``batch_idx`` of callbacks, the
interval of a mid-epoch SIGTERM save) counts groups.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any


class StepGroup(list):
    """The consecutive batches of one execution, each trained on with its own optimiser step."""


class StepGroups:
    """A training loader yielding ``StepGroup``s of ``steps`` consecutive batches of ``loader`` (the
    last of an epoch may be shorter); everything else (Lightning's ``state_dict`` for resuming
    mid-epoch, ``batch_size``...) is the wrapped loader's.

    Attributes:
        step: the position, in its group, of the batch being trained on (set by the model's
            loop, 0 between groups): with the groups done, where the epoch stands in batches.
    """

    def __init__(self, loader: Iterable[Any], steps: int) -> None:
        self.loader = loader
        self.steps = steps
        self.step = 0

    def __len__(self) -> int:
        return -(-len(self.loader) // self.steps)  # an unsized loader raises TypeError, as Lightning expects

    @property
    def batches(self) -> float:
        """Batches of the wrapped loader per epoch (inf when it has no length)."""
        try:
            return len(self.loader)
        except TypeError:
            return math.inf

    def __iter__(self) -> Iterator[StepGroup]:
        batches = iter(self.loader)
        while group := StepGroup(islice(batches, self.steps)):
            yield group

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def batches_done(self, groups_done: int) -> int:
        """Batches of the epoch trained on, with ``groups_done`` groups complete."""
        return int(min(groups_done * self.steps + self.step, self.batches))
