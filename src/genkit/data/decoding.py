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
import mmap
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genkit.console import Progress
from genkit.data.base import Example, Recipe, Split
from genkit.errors import DataError

log = logging.getLogger(__name__)

#: Version of the cache's layout; a cache of another version is decoded again.
CACHE_VERSION = 1
#: The in-memory path refuses a data set whose stored examples would take more than this share of RAM.
MEMORY_SHARE = 0.5


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


#: What forked decoding workers read and write: the recipe (its decode is a closure, which cannot be
#: pickled) and the shared arrays the examples go into.
_decoding: tuple[Recipe, dict[str, dict[str, np.ndarray]]] | None = None


def _decode_block(block: tuple[str, int, int]) -> tuple[int, list[tuple[str, int, str]]]:
    """Decode items ``start:stop`` of a split into their rows of the shared arrays; returns how many
    were decoded and the unusable ones (split, index, why)."""
    split, start, stop = block
    recipe, arrays = _decoding
    unusable = []
    for index in range(start, stop):
        example = recipe.decode(split, recipe.items[split][index])
        if isinstance(example, str):
            unusable.append((split, index, example))
            continue
        for key, array in arrays[split].items():
            array[index] = example[key]
    return stop - start, unusable


def decode_all(recipe: Recipe, workers: int) -> dict[str, Any]:
    """Every item decoded, in order, by ``workers`` forked processes that write each example straight
    into its row of arrays shared with this process (nothing decoded is copied between processes, and
    the peak memory is the stored data set); unusable items' rows are dropped at the end."""
    global _decoding
    workers = workers or os.cpu_count() or 1
    total = sum(len(items) for items in recipe.items.values())
    log.info("decoding %s: %d items, %d worker process(es)", recipe.source, total, workers)
    arrays = allocate(recipe, first_example(recipe), total)
    size = max(1, min(BLOCK_ITEMS, total // (8 * workers)))
    blocks = [
        (split, start, min(start + size, len(items)))
        for split, items in recipe.items.items()
        for start in range(0, len(items), size)
    ]
    done, unusable = Tally(), []
    _decoding = recipe, arrays
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 and sys.platform != "win32" else None
    try:
        with Progress(done, total, "decode"):
            results = pool.imap(_decode_block, blocks) if pool is not None else map(_decode_block, blocks)
            for count, bad in results:
                done.value += count
                unusable += bad
    finally:
        _decoding = None
        if pool is not None:
            pool.terminate()
    order = {split: position for position, split in enumerate(recipe.items)}
    unusable.sort(key=lambda bad: (order[bad[0]], bad[1]))
    skipped = [f"{recipe.describe(recipe.items[split][index])} ({why})" for split, index, why in unusable]
    splits = {}
    for split, split_arrays in arrays.items():
        keep = np.ones(len(recipe.items[split]), dtype=bool)
        keep[[index for name, index, _ in unusable if name == split]] = False
        kept = {
            key: array[keep] if len(array) == len(keep) and not keep.all() else array
            for key, array in split_arrays.items()
        }
        splits[split] = {key: torch.from_numpy(array) for key, array in kept.items()}
    return {"splits": splits, "skipped": skipped}


#: The most items a decoding worker takes at once.
BLOCK_ITEMS = 256


class Tally:
    """A count of decoded items, as ``Progress`` reads it."""

    value = 0


def first_example(recipe: Recipe) -> Example | None:
    """The first usable example, decoded here: the shape and type of every stored example (None: none is usable)."""
    for split, items in recipe.items.items():
        for item in items:
            example = recipe.decode(split, item)
            if not isinstance(example, str):
                return example
    return None


def allocate(recipe: Recipe, example: Example | None, total: int) -> dict[str, dict[str, np.ndarray]]:
    """Each split's arrays, shaped like ``example``, in memory shared with processes forked later;
    refused when the whole data set would not fit the in-memory path's share of RAM."""
    if example is None:
        return {split: {"x": np.zeros((0,))} for split in recipe.items}
    x = np.asarray(example["x"])
    budget = memory_budget()
    if budget is not None and x.nbytes * total > budget:
        raise DataError(
            f"{recipe.source} holds {total} examples of {x.nbytes / 1e6:.2g} MB each: "
            f"{x.nbytes * total / 1e9:.3g} GB in memory, more than {budget / 1e9:.3g} GB ({MEMORY_SHARE:.0%} of "
            "this machine's RAM). Prepare it once with `genkit prepare` (the same data options, out=SHARDS) and "
            "train from the shards with data=shards data.path=SHARDS: memory use then does not grow with the data set"
        )
    arrays = {}
    for split, items in recipe.items.items():
        arrays[split] = {"x": shared_array((len(items), *x.shape), x.dtype)}
        if "y" in example:
            arrays[split]["y"] = shared_array((len(items),), np.dtype(np.int64))
    return arrays


def shared_array(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An array in anonymous shared memory: what a process forked afterwards writes into it, this one sees."""
    count = int(np.prod(shape))
    buffer = mmap.mmap(-1, max(1, count * dtype.itemsize))
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)
