"""Data module contract and the fast in-memory path every small data set uses."""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from genkit.data.augment import Augment
from genkit.data.groups import StepGroup, StepGroups
from genkit.errors import DataError
from genkit.registry import registry
from genkit.spec import DataSpec

log = logging.getLogger(__name__)

Split = dict[str, Tensor]  # {"x": [N, ...], "y": [N]} for one split
#: One decoded example as ``genkit prepare`` stores it: ``x`` (a numpy array) and, when labelled, ``y``.
Example = dict[str, Any]
#: Splits cut from one pool never change with the run's seed: runs stay comparable.
SPLIT_SEED = 0


@dataclass(frozen=True)
class Recipe:
    """How a data set is decoded, example by example: what ``genkit prepare`` writes into shards
    (in parallel worker processes) and what the in-memory path of the same module decodes.

    Attributes:
        source: what the data set is, for messages and for telling data sets apart
            (``image_folder /data/faces``): another source in a prepared folder is another data set.
        spec: the spec of the stored examples (before any training-time transform such as binarisation).
        items: each split's items, cheap handles such as file paths, in the split's fixed order.
        decode: a split's name and one of its items -> the example, or a string saying why the item is
            unusable (it is skipped, counted and named). Runs in forked worker processes, so it may
            close over loaded arrays.
        fingerprint: changes whenever the decoded examples would (files, settings).
        scale: stored ``x`` values divided by it are what the model sees (255 for 8-bit images);
            None: ``x`` is used as stored (token ids).
        describe: one item as a message names it (a file's relative path).
        finish: the final spec from the stored training examples, read back in order, for specs that
            hold statistics of the data (audio's log-mel normalisation); None: ``spec`` as it is.
    """

    source: str
    spec: DataSpec
    items: dict[str, Sequence[Any]]
    decode: Callable[[str, Any], Example | str]
    fingerprint: str
    scale: float | None = None
    describe: Callable[[Any], str] = str
    finish: Callable[[Iterable[Example]], DataSpec] | None = None


class DataModule(L.LightningDataModule, ABC):
    """A LightningDataModule that knows its ``spec`` before any data is read.

    ``spec`` must be cheap, deterministic and identical on every DDP rank: genkit
    builds the model from it before the Trainer starts. Batches are dicts with ``x``
    and optionally ``mask`` and ``y``.
    """

    #: Training-time augmentation (modules with augmentation options set it; off by default).
    augment = Augment()
    #: The run's seed (modules that shuffle or augment take it as their first argument).
    seed = 0

    @property
    @abstractmethod
    def spec(self) -> DataSpec: ...

    @classmethod
    def probe_spec(cls) -> DataSpec | None:
        """A spec like this module's, made without reading any data, for checking parts against it
        (``genkit list --check``); None when ``spec`` itself reads nothing."""
        return None

    def recipe(self) -> Recipe:
        """How ``genkit prepare`` decodes this data set (modules that can be prepared implement it)."""
        raise DataError(
            f"{type(self).__name__} does not say how its examples are decoded one by one, so it cannot be "
            "prepared into shards; train on it directly, or implement recipe() (see docs/plugins.md)"
        )

    def ordered_batches(self, split: str) -> Iterable[Split]:
        """A split's batches in its fixed order (``examples`` reads them)."""
        return getattr(self, f"{split}_dataloader")()

    def examples(self, split: str, limit: int | None = None) -> Split:
        """The first ``limit`` examples (all when None) of a split in its fixed evaluation order, on the
        CPU, as one batch: what the tools on trained models (reconstruct, interpolate...) read."""
        batches, count = [], 0
        for batch in self.ordered_batches(split):
            batches.append({k: t.cpu() for k, t in batch.items()})
            count += len(batch["x"])
            if limit is not None and count >= limit:
                break
        if not batches:
            raise DataError(f"the {split} split is empty")
        pad = padding_id(self.spec)
        if pad is not None:  # sequence batches are as long as their longest: pad them to one length
            longest = max(b["x"].shape[1] for b in batches)
            fill = {"x": pad, "mask": False}
            batches = [
                {k: F.pad(t, (0, longest - t.shape[1]), value=fill[k]) if k in fill else t for k, t in b.items()}
                for b in batches
            ]
        return self.model_batch({k: torch.cat([b[k] for b in batches])[:limit] for k in batches[0]}, None)

    def model_batch(self, batch: dict[str, Tensor], generator: torch.Generator | None) -> dict[str, Tensor]:
        """A loaded batch as the model reads it: augmented when a generator is given (training batches,
        with augmentation on), and whatever a module computes per batch where the batch is."""
        if generator is not None and (self.augment.flip or self.augment.crop):
            batch = {**batch, "x": self.augment.images(batch["x"], generator)}
        return batch

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, Tensor]:
        if isinstance(batch, StepGroup):  # the model readies each batch of the group right before its step
            return batch
        return self.device_batch(batch)

    def device_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """A batch on its device made what the model reads (``model_batch``), augmented in training; what
        Lightning's ``on_after_batch_transfer`` does to each batch. Subclasses with per-batch randomness
        of their own override this, so that it runs right before the batch's step whatever
        ``steps_per_execution`` is."""
        trainer = self.trainer
        generator = None
        if self.augment.active and trainer is not None and trainer.training:
            place = (self.seed, trainer.current_epoch, batches_trained(trainer))
            generator = Augment.generator(*place, device=batch["x"].device)
        return self.model_batch(batch, generator)


class TensorBatches:
    """Dict batches sliced from in-memory tensors: no per-item Python work, no workers.

    The order of an epoch depends only on ``seed`` and the epoch number, so a resumed
    run sees the same batches. Under DDP each rank takes a disjoint shard; training
    shards are cut to equal length so every rank runs the same number of steps.

    Resumable mid-epoch (Lightning's ``state_dict``/``load_state_dict`` loader protocol):
    the state is the epoch and the number of its batches training has completed
    (``progress``), and a restored loader skips those in that epoch.

    With ``scale``, ``x`` is held as stored (8-bit pixels, 16-bit PCM) and each batch's ``x`` is
    divided by it: what the model reads, computed per batch where the tensors are.
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
        scale: float | None = None,
    ) -> None:
        self.tensors = tensors
        self.scale = scale
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
                yield self.scaled({k: t[start : start + self.batch_size] for k, t in self.tensors.items()})
            return
        else:
            order = torch.arange(total)
        order = order[self.rank :: self.world_size][: self.n]
        device = next(iter(self.tensors.values())).device
        order = order.to(device)
        for start in range(skip, self.n, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.scaled({k: t.index_select(0, index) for k, t in self.tensors.items()})

    def scaled(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return scaled(batch, self.scale)


def scaled(batch: dict[str, Tensor], scale: float | None) -> dict[str, Tensor]:
    """``batch`` with ``x`` divided by ``scale``: stored values (8-bit pixels) -> what the model reads."""
    return batch if scale is None else {**batch, "x": batch["x"].float() / scale}


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


def padding_id(spec: DataSpec) -> int | None:
    """The id that pads sequences of a variable-length spec (its vocabulary's, else 0); None for
    fixed-size examples."""
    if not spec.variable_length:
        return None
    return spec.vocabulary.pad if spec.vocabulary is not None else 0


def array_example(x: np.ndarray, y: np.ndarray, index: int) -> Example:
    return {"x": x[index], "y": int(y[index])}


def array_recipe(source: str, spec: DataSpec, splits: dict[str, Split], levels: int) -> Recipe:
    """The recipe of image splits held in memory in [0, 1]: stored as 8-bit levels (``levels`` is a
    full pixel: 255, or 16 for scikit-learn's digits), so the model sees exactly the values it
    sees in memory."""
    stored, digest = {}, hashlib.sha256(f"{source} {spec.to_dict()}".encode())
    for name, split in splits.items():
        scaled = split["x"] * levels
        x = scaled.round()
        if (x - scaled).abs().max() > 1e-3 or x.min() < 0 or x.max() > 255:
            raise DataError(
                f"{source} gives pixel values that are not multiples of 1/{levels} in [0, 255/{levels}], "
                "so they cannot be stored as 8-bit levels; set the data module's `levels` to its full-pixel value"
            )
        stored[name] = (x.to(torch.uint8).numpy(), split["y"].numpy())
        digest.update(name.encode() + stored[name][0].tobytes() + stored[name][1].tobytes())
    return Recipe(
        source=source,
        spec=spec,
        items={name: range(len(x)) for name, (x, _) in stored.items()},
        decode=lambda split, index: array_example(*stored[split], index),
        fingerprint=digest.hexdigest(),
        scale=float(levels),
    )


def batches_trained(trainer: L.Trainer) -> int:
    """Training batches of the current epoch whose step has run: the mid-epoch resume point a loader
    saves. Lightning's ``completed`` count lags by one inside ``on_train_batch_end``, where
    step-interval checkpoints are written, and it restores that count with the lag made good. Lightning
    counts ``StepGroup``s when batches come in groups."""
    groups_done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    loader = trainer.train_dataloader
    return loader.batches_done(groups_done) if isinstance(loader, StepGroups) else groups_done


#: Data sets at most this large are moved to the accelerator once, at set-up.
DEVICE_RESIDENT_BYTES = 2 * 1024**3


class InMemoryDataModule(DataModule):
    """Base for data sets held in memory as tensors: seeded, resumable, DDP-sharded batches
    sliced straight from the tensors, kept on the accelerator when they fit.

    Subclasses implement ``load_splits`` and ``spec``; ``prepare_splits`` may transform the
    loaded tensors once (binarisation, filtering), ``batches`` chooses the loader class. A subclass
    whose ``x`` is loaded as stored (8-bit pixels, 16-bit PCM) sets ``scale``: it holds a quarter
    (a half) of the memory, and each batch is divided by it.

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

    #: Loaded ``x`` divided by it is what the model reads (255 for 8-bit pixels); None: ``x`` as loaded.
    scale: float | None = None

    @abstractmethod
    def load_splits(self) -> dict[str, Split]:
        """Read the data: ``{"train"|"val"|"test": {"x": [N, *event_shape], ...}}``."""

    def prepare_splits(self, splits: dict[str, Split]) -> dict[str, Split]:
        """Transform the loaded splits once, before they move to the device (default: as loaded)."""
        return splits

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.augment.check(self.spec)
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

    def examples(self, split: str, limit: int | None = None) -> Split:
        self.setup()
        return self.model_batch(scaled({k: t[:limit].cpu() for k, t in self.splits[split].items()}, self.scale), None)

    def batches(self, split: str, batch_size: int, train: bool, **options: Any) -> TensorBatches:
        """The loader over one split (``options``: the trainer-derived arguments of ``TensorBatches``)."""
        return TensorBatches(
            self.splits[split], batch_size, shuffle=train, equal_shards=train, scale=self.scale, **options
        )

    def _batches(self, split: str, batch_size: int, train: bool) -> TensorBatches:
        trainer = self.trainer

        def batches_done() -> int:
            return batches_trained(trainer) if train and trainer else 0

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
        batches = batch if isinstance(batch, StepGroup) else [batch]
        if all(t.device == device for one in batches for t in one.values()):
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
        flip: training images mirrored left to right at random (seeded; see ``Augment``).
        crop: training images shifted by up to this many pixels each way at random (pad and crop).
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
        flip: bool = False,
        crop: int = 0,
    ) -> None:
        super().__init__(seed, batch_size=batch_size, eval_batch_size=eval_batch_size, on_device=on_device)
        if binarize not in ("none", "dynamic", "static"):
            raise ValueError(f"data.binarize must be none, dynamic or static, got {binarize!r}")
        self.binarize = binarize
        self.exclude_labels = list(exclude_labels)
        self.augment = Augment(flip=flip, crop=crop)

    #: The stored value of a full pixel: ``x`` is a multiple of ``1 / levels`` (prepared as 8-bit levels).
    levels = 255

    def base_support(self) -> str:
        """Support of ``x`` before binarisation."""
        return "unit_interval"

    def recipe(self) -> Recipe:
        """The splits as loaded (no label left out, nothing binarised: ``data=shards`` does those)."""
        name = next((entry.name for entry in registry("data") if entry.cls is type(self)), type(self).__name__)
        root = getattr(self, "root", None)
        source = f"{name} {root.resolve()}" if root is not None else name
        spec = replace(self.spec, support=self.base_support())
        return array_recipe(source, spec, self.load_splits(), self.levels)

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
                    split["x"] = self.binarized(split["x"], generator)
        return splits

    def binarized(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Bernoulli draws of the pixels' values, held as ``x`` is (0 or a full pixel)."""
        if self.scale is None:
            return torch.bernoulli(x, generator=generator)
        return (torch.bernoulli(x.float() / self.scale, generator=generator) * self.scale).to(x.dtype)

    def device_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        batch = super().device_batch(batch)
        if self.binarize == "dynamic" and self.trainer is not None and self.trainer.training:
            batch = {**batch, "x": torch.bernoulli(batch["x"])}
        return batch
