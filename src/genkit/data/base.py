"""Data module contract and the fast in-memory path every small data set uses."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor

from genkit.errors import DataError
from genkit.spec import DataSpec

Split = dict[str, Tensor]  # {"x": [N, ...], "y": [N]} for one split
#: Splits cut from one pool never change with the run's seed: runs stay comparable.
SPLIT_SEED = 0


class DataModule(L.LightningDataModule, ABC):
    """A LightningDataModule that knows its ``spec`` before any data is read.

    ``spec`` must be cheap, deterministic and identical on every DDP rank: genkit
    builds the model from it before the Trainer starts. Batches are dicts with ``x``
    and optionally ``mask`` and ``y``.
    """

    @property
    @abstractmethod
    def spec(self) -> DataSpec: ...

    @classmethod
    def probe_spec(cls) -> DataSpec | None:
        """A spec like this module's, made without reading any data, for checking parts against it
        (``genkit list --check``); None when ``spec`` itself reads nothing."""
        return None


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


class SequenceBatches(TensorBatches):
    """Batches of variable-length sequences grouped by length and cut to their longest member.

    The shard is drawn in a seeded order and cut into pools of ``pool_batches`` batches;
    each pool is sorted by length and cut into batches, and the batches are shuffled. So a
    batch holds sequences of similar length and padding stays low, while the order still
    changes every epoch (evaluation uses one fixed order). ``lengths`` stays on the CPU, so
    cutting a batch to its longest sequence never waits for the accelerator.
    """

    def __init__(self, tensors: Split, lengths: Tensor, batch_size: int, *, pool_batches: int = 100, **options: Any):
        super().__init__(tensors, batch_size, **options)
        self.lengths = lengths.cpu()
        self.pool_batches = pool_batches

    def epoch_batches(self) -> list[Tensor]:
        """This rank's batches of the current epoch, as index tensors."""
        total = len(self.lengths)
        generator = torch.Generator().manual_seed(self.seed + self.epoch() if self.shuffle else SPLIT_SEED)
        order = torch.randperm(total, generator=generator)[self.rank :: self.world_size][: self.n]
        pool = self.pool_batches * self.batch_size
        batches: list[Tensor] = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches += list(chunk.split(self.batch_size))
        shuffled = torch.randperm(len(batches), generator=generator)
        return [batches[i] for i in shuffled]

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        skip = self.batches_to_skip()
        device = next(iter(self.tensors.values())).device
        for index in self.epoch_batches()[skip:]:
            longest = int(self.lengths[index].max())
            index = index.to(device)
            yield {k: t.index_select(0, index)[:, :longest] for k, t in self.tensors.items()}


#: Data sets at most this large are moved to the accelerator once, at set-up.
DEVICE_RESIDENT_BYTES = 2 * 1024**3


class InMemoryDataModule(DataModule):
    """Base for data sets held in memory as tensors: seeded, resumable, DDP-sharded batches
    sliced straight from the tensors, kept on the accelerator when they fit.

    Subclasses implement ``load_splits`` and ``spec``; ``prepare_splits`` may transform the
    loaded tensors once (binarisation, filtering), ``batches`` chooses the loader class.

    Args:
        seed: the run's seed (wired by genkit): shuffling and any randomness of the data.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (0: 4x batch_size).
        on_device: keep the whole set on the accelerator when it fits, so no
            host-to-device copy happens per step.
    """

    def __init__(
        self, seed: int = 0, *, batch_size: int = 128, eval_batch_size: int = 0, on_device: bool = True
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 4 * batch_size
        self.seed = seed
        self.on_device = on_device
        self.splits: dict[str, Split] = {}

    @abstractmethod
    def load_splits(self) -> dict[str, Split]:
        """Read the data: ``{"train"|"val"|"test": {"x": [N, *event_shape], ...}}``."""

    def prepare_splits(self, splits: dict[str, Split]) -> dict[str, Split]:
        """Transform the loaded splits once, before they move to the device (default: as loaded)."""
        return splits

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        splits = self.prepare_splits(self.load_splits())
        device = self._resident_device(splits)
        self.splits = {name: {k: t.to(device) for k, t in split.items()} for name, split in splits.items()}

    def _resident_device(self, splits: dict[str, Split]) -> torch.device:
        trainer = self.trainer
        if trainer is None or not self.on_device:
            return torch.device("cpu")
        size = sum(t.numel() * t.element_size() for split in splits.values() for t in split.values())
        device = trainer.strategy.root_device
        return device if size <= DEVICE_RESIDENT_BYTES else torch.device("cpu")

    def batches(self, split: str, batch_size: int, train: bool, **options: Any) -> TensorBatches:
        """The loader over one split (``options``: the trainer-derived arguments of ``TensorBatches``)."""
        return TensorBatches(self.splits[split], batch_size, shuffle=train, equal_shards=train, **options)

    def _batches(self, split: str, batch_size: int, train: bool) -> TensorBatches:
        trainer = self.trainer

        def batches_done() -> int:  # training batches of this epoch completed: the mid-epoch resume point
            return trainer.fit_loop.epoch_loop.batch_progress.current.completed if train and trainer else 0

        return self.batches(
            split,
            batch_size,
            train,
            seed=self.seed,
            epoch=(lambda: trainer.current_epoch) if trainer is not None else (lambda: 0),
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
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


class ArrayDataModule(InMemoryDataModule):
    """Base for fixed-size data sets that fit in memory as tensors (all built-in image sets).

    Subclasses implement ``load_splits`` (train/val/test tensors, ``x`` in the range
    the spec states, ``y`` labels) and ``spec``. Options shared by image data sets live here.

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
        exclude_labels: tuple[int, ...] = (),
    ) -> None:
        super().__init__(seed, batch_size=batch_size, eval_batch_size=eval_batch_size, on_device=on_device)
        if binarize not in ("none", "dynamic", "static"):
            raise ValueError(f"data.binarize must be none, dynamic or static, got {binarize!r}")
        self.binarize = binarize
        self.exclude_labels = list(exclude_labels)

    def base_support(self) -> str:
        """Support of ``x`` before binarisation."""
        return "unit_interval"

    def support(self) -> str:
        return "binary" if self.binarize != "none" else self.base_support()

    def prepare_splits(self, splits: dict[str, Split]) -> dict[str, Split]:
        if self.exclude_labels:
            for name in ("train", "val"):
                keep = ~torch.isin(splits[name]["y"], torch.tensor(self.exclude_labels))
                if not keep.any():
                    raise DataError(
                        f"data.exclude_labels={self.exclude_labels} leaves no {name} examples; "
                        "leave out fewer labels (they are the classes the model never sees)"
                    )
                splits[name] = {k: t[keep] for k, t in splits[name].items()}
        if self.binarize != "none":
            generator = torch.Generator().manual_seed(self.seed)
            for name, split in splits.items():
                if self.binarize == "static" or name != "train":
                    split["x"] = torch.bernoulli(split["x"], generator=generator)
        return splits

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, Tensor]:
        if self.binarize == "dynamic" and self.trainer is not None and self.trainer.training:
            batch = {**batch, "x": torch.bernoulli(batch["x"])}
        return batch
