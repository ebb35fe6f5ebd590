"""Prepared data: a data set decoded once into compressed shards (``genkit prepare``) and streamed
from them in training (``data=shards``).

The shard format and the streaming are Lightning's ``litdata``: ``optimize`` writes zstd-compressed
chunks from parallel worker processes; ``StreamingDataset`` and ``StreamingDataLoader`` read them
from local disk, a shared file system or object storage, shuffle the chunks and the items within
them, divide them among DDP ranks and loader workers, and resume mid-epoch from the loader's state,
which Lightning keeps in every checkpoint. Memory use depends on the chunk size, not on the data set.

A prepared folder holds ``train/``, ``val/`` and ``test/`` (litdata chunks and their ``index.json``)
and ``genkit-data.json``, written last: what was prepared from what (source and fingerprint), the
spec, each split's size and chunk files. While a preparation runs the folder holds
``.genkit-preparing`` and no manifest, so an interrupted preparation never looks complete.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genkit.console import SUMMARY, Progress
from genkit.data.augment import Augment
from genkit.data.base import DataModule, Recipe, batches_trained, padding_id, scaled
from genkit.data.decoding import report_skipped
from genkit.errors import DataError, DataNotFoundError
from genkit.registry import register_data
from genkit.spec import AudioSettings, DataSpec

log = logging.getLogger(__name__)

MANIFEST = "genkit-data.json"
PREPARING = ".genkit-preparing"
SKIPPED = ".genkit-skipped"
#: Version of the prepared layout; a folder of another version is prepared again.
FORMAT = 1
#: Bytes of one chunk before compression: large enough for fast sequential reads, small enough that a
#: shuffle window of a few chunks per loader worker stays well under a gigabyte.
CHUNK_BYTES = "64MB"
SPLIT_NAMES = ("train", "val", "test")
#: zstd at level 1: several times faster to write than litdata's default (4) for a few percent more disk;
#: reading is as fast either way.
COMPRESSION = "zstd:1"
#: The most items a preparing worker decodes per input it takes from litdata.
BLOCK_ITEMS = 256


@dataclass(frozen=True)
class Manifest:
    """What a prepared folder holds (``genkit-data.json``)."""

    source: str
    fingerprint: str
    spec: dict[str, Any]
    scale: float | None
    sizes: dict[str, int]
    chunks: dict[str, dict[str, int]]  # split -> chunk file -> its size in bytes
    skipped: list[str]
    format: int = FORMAT

    @classmethod
    def read(cls, path: str) -> Manifest | None:
        """The manifest of a prepared folder (local or a URL litdata reads); None when there is none."""
        text = read_text(f"{path.rstrip('/')}/{MANIFEST}")
        if text is None:
            return None
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as error:
            raise DataError(
                f"{path}/{MANIFEST} is not a genkit manifest ({error}); prepare the data again into a new folder"
            ) from None

    def write(self, folder: Path) -> None:
        partial = folder / f"{MANIFEST}.partial"
        partial.write_text(json.dumps(asdict(self), indent=1))
        partial.replace(folder / MANIFEST)


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def read_text(path: str) -> str | None:
    """A small file's text from local disk or object storage; None when it does not exist."""
    if not is_url(path):
        local = Path(path.removeprefix("file://")).expanduser()
        return local.read_text() if local.is_file() else None
    import tempfile

    from litdata.streaming.fs_provider import _get_fs_provider  # the storage clients litdata streams with

    provider = _get_fs_provider(path)
    if not provider.exists(path):
        return None
    with tempfile.TemporaryDirectory() as scratch:
        local = os.path.join(scratch, MANIFEST)
        provider.download_file(path, local)
        return Path(local).read_text()


def prepare(recipe: Recipe, out: str, workers: int = 0, overwrite: bool = False) -> Manifest:
    """Decode ``recipe`` into shards under ``out`` with ``workers`` processes (0: one per core).

    Does nothing when ``out`` already holds this source prepared from the same files and settings;
    prepares again when they changed; refuses a folder that holds another data set (unless
    ``overwrite``) or files that are not a prepared data set.
    """
    folder = Path(out).expanduser()
    old = Manifest.read(str(folder)) if folder.is_dir() else None
    if old is not None and (old.source, old.fingerprint, old.format) == (recipe.source, recipe.fingerprint, FORMAT):
        SUMMARY.info("%s already holds %s prepared from the same files and settings: nothing to do", folder, old.source)
        return old
    if old is not None and old.source != recipe.source and not overwrite:
        raise DataError(
            f"{folder} holds another prepared data set ({old.source}); choose another out=, or add "
            f"overwrite=true to replace it with {recipe.source}"
        )
    if old is not None:
        log.info("the files or settings of %s changed since %s was prepared: preparing it again", old.source, folder)
    elif (folder / PREPARING).exists():
        log.info("an earlier preparation into %s did not finish: starting it again", folder)
    elif folder.is_dir() and any(folder.iterdir()):
        raise DataError(f"{folder} holds files that are not a prepared data set; give an empty or new folder as out=")
    if sys.platform == "win32":
        raise DataError("genkit prepare runs its workers by forking, which Windows lacks; prepare on Linux or macOS")

    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # first: from here on the folder never looks complete
    (folder / PREPARING).write_text(recipe.source)
    for name in (*SPLIT_NAMES, SKIPPED):
        shutil.rmtree(folder / name, ignore_errors=True)
    workers = workers or os.cpu_count() or 1
    total = sum(len(items) for items in recipe.items.values())
    log.info("preparing %s: %d items, %d worker process(es), into %s", recipe.source, total, workers, folder)
    done = multiprocessing.get_context("fork").Value("q", 0)
    with Progress(done, total, "prepare"):
        for split, items in recipe.items.items():
            write_split(recipe, split, items, folder, workers, done)
    skipped = [line for file in sorted((folder / SKIPPED).glob("*")) for line in file.read_text().splitlines()]
    report_skipped(recipe, skipped, total)
    shutil.rmtree(folder / SKIPPED, ignore_errors=True)
    spec = recipe.spec if recipe.finish is None else recipe.finish(stored_examples(folder / "train"))
    sizes, chunks = {}, {}
    for split in recipe.items:
        index = json.loads((folder / split / "index.json").read_text())
        sizes[split] = sum(chunk["chunk_size"] for chunk in index["chunks"])
        chunks[split] = {c["filename"]: (folder / split / c["filename"]).stat().st_size for c in index["chunks"]}
        if not sizes[split]:
            raise DataError(f"the {split} split of {recipe.source} has no usable examples (see the warning above)")
    manifest = Manifest(recipe.source, recipe.fingerprint, spec.to_dict(), recipe.scale, sizes, chunks, skipped)
    manifest.write(folder)
    (folder / PREPARING).unlink()
    on_disk = sum(size for split in chunks.values() for size in split.values())
    SUMMARY.info(
        "prepared %s: %s examples, %.1f MB in %s",
        recipe.source,
        ", ".join(f"{split} {size}" for split, size in sizes.items()),
        on_disk / 1e6,
        folder,
    )
    return manifest


def stored_examples(folder: Path) -> Iterator[dict[str, Any]]:
    """A written split's examples as stored, in order."""
    from litdata import StreamingDataset

    yield from StreamingDataset(str(folder))


def write_split(recipe: Recipe, split: str, items: Sequence[Any], folder: Path, workers: int, done: Any) -> None:
    """One split's items decoded by forked worker processes into litdata chunks under ``folder/split``."""
    from litdata import optimize

    skipped = folder / SKIPPED
    skipped.mkdir(exist_ok=True)

    def decode(block: tuple[int, int]) -> Iterator[dict[str, Any]]:  # yields the block's usable examples
        for index in range(*block):
            example = recipe.decode(split, items[index])
            with done.get_lock():
                done.value += 1
            if isinstance(example, str):
                with open(skipped / f"{split}-{os.getpid()}", "a") as names:
                    names.write(f"{recipe.describe(items[index])} ({example})\n")
                continue
            yield example

    # Blocks of items, not items, are litdata's inputs: it hands each input to a worker through a queue,
    # which would cost more than decoding a small image. Ranges of indices are never taken for files.
    workers = max(1, min(workers, len(items)))
    size = max(1, min(BLOCK_ITEMS, -(-len(items) // (4 * workers))))
    blocks = [(start, min(start + size, len(items))) for start in range(0, len(items), size)]
    try:
        optimize(
            decode,
            blocks,
            str(folder / split),
            chunk_bytes=CHUNK_BYTES,
            compression=COMPRESSION,
            num_workers=min(workers, len(blocks)),
            keep_data_ordered=True,  # the split's order is the items' order: the same as in memory
            reorder_files=False,
            start_method="fork",
            verbose=False,
        )
    except OSError as error:
        raise DataError(
            f"could not write the shards of {split} into {folder} ({error}); free space or choose another out= "
            "(the next genkit prepare starts again)"
        ) from None


@cache
def resumable_loader_class() -> type:
    """litdata's ``StreamingDataLoader`` made to resume exactly under Lightning (``trainer`` set): its
    saved state counts the batches training has stepped on, not those fetched (Lightning fetches
    ahead, so litdata's own count would skip batches), and only the epoch right after a restore
    resumes. The state of a litdata loader is a function of its epoch and that count (batches go
    round-robin over the workers), which is what ``state_dict`` rebuilds. Made on first use, so
    importing genkit does not import litdata."""
    from litdata import StreamingDataLoader

    class ResumableLoader(StreamingDataLoader):
        trainer: Any = None
        restored = False

        def load_state_dict(self, state: dict[str, Any]) -> None:
            super().load_state_dict(state)
            self.restored = True

        def __iter__(self) -> Any:
            # litdata resumes every epoch until one runs its iterator out, but Lightning ends an epoch
            # by counting batches: only the first epoch after load_state_dict may resume.
            if not self.restored:
                self.restore = False
            self.restored = False
            return super().__iter__()

        def state_dict(self) -> dict[str, Any]:
            if self.trainer is None:
                return super().state_dict()
            fetched = self._num_samples_yielded_streaming, self._latest_worker_idx
            done = batches_trained(self.trainer)
            self._num_samples_yielded_streaming = done * self.batch_size
            self._latest_worker_idx = (done - 1) % max(1, self.num_workers)  # the worker of the last batch stepped on
            try:
                return super().state_dict()
            finally:
                self._num_samples_yielded_streaming, self._latest_worker_idx = fetched

    return ResumableLoader


class Collate:
    """Stored examples -> a batch as the model sees it: ``x`` divided by the scale (8-bit images to
    [0, 1], 16-bit PCM to [-1, 1)), audio features computed from the clips (unless they were prepared
    longer, to be cut per batch: ``Shards.model_batch``), labels as int64, and sequences (``pad``
    given) padded to the batch's longest with their ``mask``. Runs in the loader's worker processes."""

    def __init__(self, scale: float | None, pad: int | None = None, audio: AudioSettings | None = None) -> None:
        self.scale, self.pad, self.audio = scale, pad, audio

    @cached_property
    def features(self) -> Any:
        from genkit.audio import AudioFeatures

        return AudioFeatures(self.audio)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Tensor]:
        if self.pad is not None:
            lengths = torch.tensor([len(e["x"]) for e in examples])
            x = torch.full((len(examples), int(lengths.max())), self.pad, dtype=torch.long)
            for row, example in zip(x, examples):
                row[: len(example["x"])] = torch.from_numpy(np.asarray(example["x"], dtype=np.int64))
            batch = {"x": x, "mask": torch.arange(x.shape[1])[None, :] < lengths[:, None]}
        else:
            batch = {"x": torch.from_numpy(np.stack([np.asarray(e["x"]) for e in examples]))}
        batch = scaled(batch, self.scale)
        if self.audio is not None and batch["x"].shape[1] == self.audio.num_samples:
            batch["x"] = self.features.model_input(batch["x"])
        if "y" in examples[0]:
            batch["y"] = torch.tensor([int(e["y"]) for e in examples])
        return batch


def quiet_streaming() -> None:
    """Keep two messages of the streaming path off the console, narrowly: litdata's INFO lines on how it
    opens each split (Hydra shows INFO), and Lightning's warning that an IterableDataset's length may
    be wrong with several loader workers (litdata gives each worker its own share: it is right)."""
    logging.getLogger("litdata").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")


@register_data("shards")
class Shards(DataModule):
    """A data set prepared by ``genkit prepare``, streamed from its shards.

    Each DDP rank and loader worker reads its own chunks, so every training example is seen once
    per epoch over all processes; the order depends only on ``seed`` and the epoch, and a killed
    run resumes mid-epoch with the batches it would have seen.

    Args:
        path: the prepared folder: a local path, or a URL litdata reads (``s3://``, ``gs://``...).
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (0: 4x batch_size).
        num_workers: loader worker processes per rank that read and decompress chunks (0: in the
            training process).
        skip_corrupt: train without shards that are missing or truncated (with a warning naming them)
            instead of stopping.
        cache_dir: where chunks of a remote data set are kept while streaming (empty: litdata's default).
        max_cache_size: the most disk that cache may take, e.g. ``50GB``.
        flip, crop: training images mirrored, and shifted by up to ``crop`` pixels, at random (``Augment``).
        offset: seconds by which training clips start later at random, up to the ``data.offset`` the
            audio was prepared with (0: cut at the start, as evaluation does).
        seed: the run's seed (wired by genkit): shuffling and augmentation.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        path: str = "",
        batch_size: int = 128,
        eval_batch_size: int = 0,
        num_workers: int = 2,
        skip_corrupt: bool = False,
        cache_dir: str = "",
        max_cache_size: str = "50GB",
        flip: bool = False,
        crop: int = 0,
        offset: float = 0.0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be 0 or more, got {num_workers}")
        if not path:
            raise DataNotFoundError("data.path is not set: give a folder made by genkit prepare (data.path=SHARDS)")
        self.path = path if is_url(path) else str(Path(path).expanduser())
        self.seed = seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 4 * batch_size
        self.num_workers = num_workers
        self.skip_corrupt = skip_corrupt
        self.cache_dir = cache_dir
        self.max_cache_size = max_cache_size
        manifest = Manifest.read(self.path)
        if manifest is None:
            raise DataNotFoundError(
                f"{self.path} holds no prepared data set ({MANIFEST} is missing: not prepared, or its preparation "
                "did not finish); run genkit prepare with out= that folder"
            )
        self.manifest = manifest
        rate = self.spec.audio.sample_rate if self.spec.audio is not None else 0
        self.augment = Augment(flip=flip, crop=crop, offset=round(offset * rate))
        self.augment.check(self.spec)
        if offset and self.spec.audio is None:
            raise ValueError(f"data.offset moves audio clips; {self.path} holds {self.spec.modality}")
        quiet_streaming()
        self.inputs: dict[str, str] = {}

    @cached_property
    def spec(self) -> DataSpec:
        return DataSpec.from_dict(self.manifest.spec)

    def setup(self, stage: str | None = None) -> None:
        if not self.inputs:
            self.inputs = {split: self.checked(split) for split in self.manifest.sizes}

    def checked(self, split: str) -> str:
        """The folder to stream ``split`` from, after checking that every chunk of a local folder is
        there at its prepared size; with ``skip_corrupt``, a view without the bad ones."""
        source = f"{self.path.rstrip('/')}/{split}"
        if is_url(self.path):
            return source
        expected = self.manifest.chunks[split]
        bad = {}
        for name, size in expected.items():
            chunk = Path(source) / name
            found = chunk.stat().st_size if chunk.is_file() else None
            if found != size:
                bad[name] = "missing" if found is None else f"{found} bytes, {size} when prepared"
        if not bad:
            return source
        listed = "; ".join(f"{Path(source) / name} ({why})" for name, why in bad.items())
        if not self.skip_corrupt:
            raise DataError(
                f"damaged shards in the {split} split: {listed}. Prepare the data again (genkit prepare), or set "
                "data.skip_corrupt=true to train without them"
            )
        if len(bad) == len(expected):
            raise DataError(f"every shard of the {split} split is damaged: {listed}; prepare the data again")
        log.warning("skipping damaged shards of the %s split (data.skip_corrupt=true): %s", split, listed)
        return self.view_without(source, set(bad))

    def view_without(self, source: str, bad: set[str]) -> str:
        """A folder whose index lists the good chunks of ``source`` only (links to them, nothing copied)."""
        import hashlib
        import tempfile

        key = hashlib.sha256(f"{Path(source).resolve()} {sorted(bad)}".encode()).hexdigest()[:16]
        view = Path(tempfile.gettempdir()) / f"genkit-shards-{key}"
        view.mkdir(exist_ok=True)
        index = json.loads((Path(source) / "index.json").read_text())
        index["chunks"] = [chunk for chunk in index["chunks"] if chunk["filename"] not in bad]
        for chunk in index["chunks"]:
            link = view / chunk["filename"]
            if not link.exists():
                link.symlink_to(Path(source).resolve() / chunk["filename"])
        partial = view / f"index.json.{os.getpid()}"
        partial.write_text(json.dumps(index))
        partial.replace(view / "index.json")
        return str(view)

    def loader(self, split: str, batch_size: int, train: bool, workers: int | None = None) -> Any:
        """litdata hands out whole batches to each rank, and under DDP drops the training examples
        that do not fill one on every rank and loader worker (fewer than ranks x workers x batch
        size, a different few each epoch, as the order changes). So evaluation batches shrink on
        small splits until every rank has one, and a training split too small for one batch per
        rank is refused."""
        from litdata import StreamingDataset

        self.setup()
        ranks = self.trainer.world_size if self.trainer is not None else 1
        size = self.manifest.sizes[split]
        if train and ranks > 1 and size < ranks * batch_size:
            raise DataError(
                f"the training split ({size} examples) is too small for one batch of data.batch_size={batch_size} "
                f"on each of {ranks} processes; lower data.batch_size"
            )
        if not train:
            batch_size = max(1, min(batch_size, size // ranks))
        options = {"cache_dir": self.cache_dir} if self.cache_dir else {}
        dataset = StreamingDataset(
            self.inputs[split],
            shuffle=train,
            seed=self.seed,
            drop_last=None if train else False,  # training: equal shares per rank under DDP
            max_cache_size=self.max_cache_size,
            **options,
        )
        loader = resumable_loader_class()(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers if workers is None else workers,
            collate_fn=Collate(self.manifest.scale, padding_id(self.spec), self.spec.audio),
            # Workers' seeds are drawn from this generator, not from the global RNG, whose state a
            # mid-epoch checkpoint saves: the model's noise stays the same across a resume.
            generator=torch.Generator().manual_seed(self.seed),
            persistent_workers=self.num_workers > 0 and train,
        )
        loader.trainer = self.trainer if train else None
        return loader

    @cached_property
    def features(self) -> Any:
        from genkit.audio import AudioFeatures

        return AudioFeatures.of(self.spec)

    def model_batch(self, batch: dict[str, Tensor], generator: torch.Generator | None) -> dict[str, Tensor]:
        """Clips prepared longer than a model's clip (``data.offset`` of audio_folder) are cut here."""
        audio, x = self.spec.audio, batch["x"]
        if audio is not None and x.dim() == 2 and x.shape[1] > audio.num_samples:
            from genkit.data.audio import clip_features

            if self.augment.offset > x.shape[1] - audio.num_samples:
                prepared = (x.shape[1] - audio.num_samples) / audio.sample_rate
                raise DataError(
                    f"data.offset={self.augment.offset / audio.sample_rate:g} s is more than the {prepared:g} s "
                    f"the clips of {self.path} were prepared with; lower it, or prepare them with a larger data.offset"
                )
            batch = {**batch, "x": clip_features(self.features, x, self.augment, generator)}
        return super().model_batch(batch, generator)

    def ordered_batches(self, split: str) -> Any:
        """Read in one process: several loader workers interleave their batches, and the tools should
        show the examples the in-memory path of the same data shows."""
        return self.loader(split, self.eval_batch_size, train=False, workers=0)

    def train_dataloader(self) -> Any:
        return self.loader("train", self.batch_size, train=True)

    def val_dataloader(self) -> Any:
        return self.loader("val", self.eval_batch_size, train=False)

    def test_dataloader(self) -> Any:
        return self.loader("test", self.eval_batch_size, train=False)
