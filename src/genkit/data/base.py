"""Data module contract and the fast in-memory path every small data set uses."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor

from genkit.spec import DataSpec

Split = dict[str, Tensor]  # {"x": [N, ...], "y": [N]} for one split


class DataModule(L.LightningDataModule, ABC):
    """A LightningDataModule that knows its ``spec`` before any data is read.

    ``spec`` must be cheap, deterministic and identical on every DDP rank: genkit
    builds the model from it before the Trainer starts. Batches are dicts with ``x``
    and optionally ``mask`` and ``y``.
    """

    @property
    @abstractmethod
    def spec(self) -> DataSpec: ...


class TensorBatches:
    """Dict batches sliced from in-memory tensors: no per-item Python work, no workers.

    The order of an epoch depends only on ``seed`` and the epoch number, so a resumed
    run sees the same batches. Under DDP each rank takes a disjoint shard; training
    shards are cut to equal length so every rank runs the same number of steps.

    Resumable mid-epoch (Lightning's ``state_dict``/``load_state_dict`` loader protocol):
    the state is the epoch and the number of its batches training has completed
    (``progress``), and a restored loader skips those in that epoch.
    """

    def __init__(
        self,
        tensors: Split,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        equal_shards: bool = False,
        progress: Callable[[], int] = lambda: 0,
    ) -> None:
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.rank = rank
        self.world_size = world_size
        self.progress = progress
        self.restored: dict[str, int] | None = None
        n = len(next(iter(tensors.values())))
        self.n = n // world_size if equal_shards else len(range(rank, n, world_size))

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch(), "batches_done": self.progress()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.restored = state

    def batches_to_skip(self) -> int:
        """Batches of this epoch a restored state says are done (0 after the first pass)."""
        state, self.restored = self.restored, None
        if state is None or state["epoch"] != self.epoch() or state["batches_done"] >= len(self):
            return 0
        return state["batches_done"]

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        total = len(next(iter(self.tensors.values())))
        skip = self.batches_to_skip() * self.batch_size
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch())
            order = torch.randperm(total, generator=generator)
        elif self.world_size == 1:
            for start in range(skip, total, self.batch_size):  # contiguous views, no copy
                yield {k: t[start : start + self.batch_size] for k, t in self.tensors.items()}
            return
        else:
            order = torch.arange(total)
        order = order[self.rank :: self.world_size][: self.n]
        device = next(iter(self.tensors.values())).device
        order = order.to(device)
        for start in range(skip, self.n, self.batch_size):
            index = order[start : start + self.batch_size]
            yield {k: t.index_select(0, index) for k, t in self.tensors.items()}


#: Data sets at most this large are moved to the accelerator once, at set-up.
DEVICE_RESIDENT_BYTES = 2 * 1024**3


class ArrayDataModule(DataModule):
    """Base for data sets that fit in memory as tensors (all built-in image sets).

    Subclasses implement ``load_splits`` (train/val/test tensors, ``x`` in the range
    the spec states) and ``spec``. Options shared by image data sets live here.

    Args:
        batch_size: training batch size (the seed model uses 128).
        eval_batch_size: validation/test batch size (0: 4x batch_size).
        binarize: ``none``; ``dynamic`` (training batches resampled as Bernoulli draws
            every step, validation/test binarised once with a fixed seed: the usual
            protocol for binary MNIST NLL); ``static`` (every split binarised once).
        seed: the run's seed (wired by genkit): shuffling and binarisation.
        on_device: keep the whole set on the accelerator when it fits, so no
            host-to-device copy happens per step.
        exclude_labels: labels left out of training and validation but kept in the test
            split, e.g. [7] to train without sevens and detect them as anomalies.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        batch_size: int = 128,
        eval_batch_size: int = 0,
        binarize: str = "none",
        on_device: bool = True,
        exclude_labels: list[int] = [],  # noqa: B006 (hydra-zen turns it into a default factory)
    ) -> None:
        super().__init__()
        if binarize not in ("none", "dynamic", "static"):
            raise ValueError(f"data.binarize must be none, dynamic or static, got {binarize!r}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 4 * batch_size
        self.binarize = binarize
        self.seed = seed
        self.on_device = on_device
        self.exclude_labels = list(exclude_labels)
        self.splits: dict[str, Split] = {}

    @abstractmethod
    def load_splits(self) -> dict[str, Split]:
        """Read the data: ``{"train"|"val"|"test": {"x": float [N, *event_shape], "y": int [N]}}``."""

    def base_support(self) -> str:
        """Support of ``x`` before binarisation."""
        return "unit_interval"

    def support(self) -> str:
        return "binary" if self.binarize != "none" else self.base_support()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        splits = self.load_splits()
        if self.exclude_labels:
            for name in ("train", "val"):
                keep = ~torch.isin(splits[name]["y"], torch.tensor(self.exclude_labels))
                splits[name] = {k: t[keep] for k, t in splits[name].items()}
        if self.binarize != "none":
            generator = torch.Generator().manual_seed(self.seed)
            for name, split in splits.items():
                if self.binarize == "static" or name != "train":
                    split["x"] = torch.bernoulli(split["x"], generator=generator)
        device = self._resident_device(splits)
        self.splits = {name: {k: t.to(device) for k, t in split.items()} for name, split in splits.items()}

    def _resident_device(self, splits: dict[str, Split]) -> torch.device:
        trainer = self.trainer
        if trainer is None or not self.on_device:
            return torch.device("cpu")
        size = sum(t.numel() * t.element_size() for split in splits.values() for t in split.values())
        device = trainer.strategy.root_device
        return device if size <= DEVICE_RESIDENT_BYTES else torch.device("cpu")

    def _batches(self, split: str, batch_size: int, train: bool) -> TensorBatches:
        trainer = self.trainer

        def batches_done() -> int:  # training batches of this epoch completed: the mid-epoch resume point
            return trainer.fit_loop.epoch_loop.batch_progress.current.completed if train and trainer else 0

        return TensorBatches(
            self.splits[split],
            batch_size,
            shuffle=train,
            seed=self.seed,
            epoch=(lambda: trainer.current_epoch) if trainer is not None else (lambda: 0),
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            equal_shards=train,
            progress=batches_done,
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", self.batch_size, train=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", self.eval_batch_size, train=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", self.eval_batch_size, train=False)

    def transfer_batch_to_device(self, batch: dict[str, Tensor], device: torch.device, dataloader_idx: int) -> Any:
        """Batches of a device-resident set are already there: skip Lightning's generic traversal."""
        if all(t.device == device for t in batch.values()):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, Tensor]:
        if self.binarize == "dynamic" and self.trainer is not None and self.trainer.training:
            batch = {**batch, "x": torch.bernoulli(batch["x"])}
        return batch
