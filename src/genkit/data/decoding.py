"""Decoding a recipe: in parallel worker processes, with a progress bar, into the compact form its
examples are stored in (8-bit pixels, 16-bit PCM); for the in-memory path, cached on disk.

The cache of a recipe is keyed by its fingerprint (the files' paths, sizes and modification times and
the settings), so a second start on an unchanged folder decodes nothing, and any change decodes
afresh. It holds the stored examples, not the float tensors a model reads: a quarter of the memory
for images, half for audio clips.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genkit.data.base import Example, Recipe, Split
from genkit.errors import DataError

log = logging.getLogger(__name__)

#: Version of the cache's layout; a cache of another version is decoded again.
CACHE_VERSION = 1
#: The in-memory path refuses a data set whose stored examples would take more than this share of RAM.
MEMORY_SHARE = 0.5


class Progress:
    """A progress bar with an ETA over all splits, fed by a counter that worker processes may share;
    one line per minute instead when the output is not a terminal."""

    def __init__(self, done: Any, total: int, action: str) -> None:
        self.done, self.total, self.action = done, total, action
        self.finished = threading.Event()

    def __enter__(self) -> Progress:
        self.thread = threading.Thread(target=self.show, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finished.set()
        self.thread.join()

    def show(self) -> None:
        from tqdm import tqdm

        interactive = sys.stderr.isatty()
        with tqdm(total=self.total, unit="item", desc=self.action, disable=not interactive) as bar:
            waited = 0.0
            while not self.finished.wait(0.5):
                bar.update(self.done.value - bar.n)
                waited += 0.5
                if not interactive and waited % 60 == 0:
                    log.info("%s: %d of %d items", self.action, self.done.value, self.total)
            bar.update(self.done.value - bar.n)


def report_skipped(recipe: Recipe, skipped: list[str], total: int) -> None:
    """Warn about the items skipped as unusable (naming the first ten); refuse when nothing is left."""
    if skipped:
        shown = ", ".join(skipped[:10]) + (", ..." if len(skipped) > 10 else "")
        log.warning("skipped %d unusable item(s) of %s: %s", len(skipped), recipe.source, shown)
    if len(skipped) == total:
        raise DataError(f"none of the {total} items of {recipe.source} could be used (see the warning above)")


def memory_budget() -> int | None:
    """Bytes of stored examples the in-memory path accepts: a share of this machine's RAM (None: unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * MEMORY_SHARE)
    except (ValueError, OSError, AttributeError):
        return None


def decode_in_memory(recipe: Recipe, cache_dir: str = "", workers: int = 0) -> dict[str, Split]:
    """Every split of a recipe as stored tensors (``x`` in the recipe's stored dtype: divide by its
    scale for what a model reads), from the cache in ``cache_dir`` when it holds them, else decoded
    by ``workers`` processes (0: one per core) and cached. Unusable items are skipped and named."""
    cache = cache_file(recipe, cache_dir)
    stored = read_cache(cache) if cache is not None else None
    if stored is None:
        stored = decode_all(recipe, workers)
        if cache is not None:
            write_cache(cache, stored)
    report_skipped(recipe, stored["skipped"], sum(len(items) for items in recipe.items.values()))
    for name, split in stored["splits"].items():
        if not len(split["x"]):
            raise DataError(f"the {name} split of {recipe.source} has no usable examples (see the warning above)")
    return stored["splits"]


def fill_cache(recipe: Recipe, cache_dir: str, workers: int = 0) -> None:
    """Decode ``recipe`` into its cache unless it is there: what a data module's ``prepare_data`` does,
    on one process per machine, before every process reads the cache."""
    cache = cache_file(recipe, cache_dir)
    if cache is not None and not cache.exists():
        write_cache(cache, decode_all(recipe, workers))


def cache_file(recipe: Recipe, cache_dir: str) -> Path | None:
    if not cache_dir:
        return None
    key = hashlib.sha256(f"{CACHE_VERSION} {recipe.source} {recipe.fingerprint}".encode()).hexdigest()
    return Path(cache_dir).expanduser() / f"{key[:24]}.pt"


def read_cache(cache: Path) -> dict[str, Any] | None:
    if not cache.exists():
        return None
    try:
        return torch.load(cache, weights_only=True)  # tensors, strings and lists only: nothing runs
    except Exception as error:  # a truncated or foreign file: decode again and rewrite it
        log.warning("ignoring the unreadable data cache %s (%s); decoding the files again", cache, error)
        return None


def write_cache(cache: Path, stored: dict[str, Any]) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.partial")  # DDP ranks may write at once
        torch.save(stored, partial)
        partial.replace(cache)
    except OSError as error:
        log.warning("could not cache decoded data in %s (%s); set data.cache_dir to a writable folder", cache, error)


#: The recipe forked decoding workers read (a recipe's decode is a closure, which cannot be pickled).
_decoding: Recipe | None = None


def _decode(task: tuple[str, int]) -> Example | str:
    split, index = task
    return _decoding.decode(split, _decoding.items[split][index])


def decode_all(recipe: Recipe, workers: int) -> dict[str, Any]:
    """Every item decoded, in order, each split's examples written into one preallocated array (so the
    peak memory is the stored data set, not a list of examples and a stacked copy)."""
    global _decoding
    workers = workers or os.cpu_count() or 1
    total = sum(len(items) for items in recipe.items.values())
    tasks = [(split, index) for split, items in recipe.items.items() for index in range(len(items))]
    log.info("decoding %s: %d items, %d worker process(es)", recipe.source, total, workers)
    done = Tally()
    _decoding = recipe
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 and sys.platform != "win32" else None
    try:
        with Progress(done, total, "decode"):
            chunk = max(1, min(64, total // (8 * workers)))
            results = pool.imap(_decode, tasks, chunksize=chunk) if pool is not None else map(_decode, tasks)
            return collect(recipe, tasks, results, done)
    finally:
        _decoding = None
        if pool is not None:
            pool.terminate()


class Tally:
    """A count of decoded items, as ``Progress`` reads it."""

    value = 0


def collect(recipe: Recipe, tasks: list[tuple[str, int]], results: Any, done: Tally) -> dict[str, Any]:
    """The decoded examples of every split in stored tensors, and the skipped items named."""
    arrays: dict[str, dict[str, np.ndarray]] = {}
    kept: dict[str, list[int]] = {split: [] for split in recipe.items}
    skipped: list[str] = []
    total = len(tasks)
    for (split, index), example in zip(tasks, results):
        done.value += 1
        if isinstance(example, str):
            skipped.append(f"{recipe.describe(recipe.items[split][index])} ({example})")
            continue
        if split not in arrays:
            arrays[split] = allocate(recipe, split, example, total)
        for key, array in arrays[split].items():
            array[len(kept[split])] = example[key]
        kept[split].append(index)
    splits = {}
    for split in recipe.items:
        count, split_arrays = len(kept[split]), arrays.get(split, {"x": np.zeros((0,))})
        trimmed = {key: array if len(array) == count else array[:count].copy() for key, array in split_arrays.items()}
        splits[split] = {key: torch.from_numpy(array) for key, array in trimmed.items()}
        if "y" in splits[split]:
            splits[split]["y"] = splits[split]["y"].long()
    return {"splits": splits, "skipped": skipped}


def allocate(recipe: Recipe, split: str, example: Example, total: int) -> dict[str, np.ndarray]:
    """The arrays one split's examples go into, shaped by its first; refused when the whole data set
    would not fit the in-memory path's share of RAM."""
    x = np.asarray(example["x"])
    budget = memory_budget()
    if budget is not None and x.nbytes * total > budget:
        raise DataError(
            f"{recipe.source} holds {total} examples of {x.nbytes / 1e6:.2g} MB each: "
            f"{x.nbytes * total / 1e9:.3g} GB in memory, more than {budget / 1e9:.3g} GB ({MEMORY_SHARE:.0%} of "
            "this machine's RAM). Prepare it once with `genkit prepare` (the same data options, out=SHARDS) and "
            "train from the shards with data=shards data.path=SHARDS: memory use then does not grow with the data set"
        )
    size = len(recipe.items[split])
    arrays = {"x": np.empty((size, *x.shape), dtype=x.dtype)}
    if "y" in example:
        arrays["y"] = np.empty(size, dtype=np.int64)
    return arrays
