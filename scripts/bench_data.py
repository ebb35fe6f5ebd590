"""The data path at scale: preparing, caching and streaming a folder of JPEGs, side by side in one run.

Generates a folder of synthetic 64x64 RGB JPEGs (smooth colour fields with noise, so they compress
like photographs; ten class folders) unless one is given, and prints:

- decoding throughput: one process (the path before ``genkit prepare`` and the cache), the in-memory
  path's parallel decode into its cache, and ``genkit prepare`` into shards;
- training throughput of a conv VAE (batch 128) streaming from shards, from the cached in-memory set,
  and from torchvision's ``ImageFolder`` with a ``DataLoader`` of two workers decoding the JPEGs;
- peak RSS of the training process streaming from shards and holding the set in memory, at the
  small size and the full one;
- time from the command to the first training step on an unchanged folder: decoded in one process
  (no cache), from the cache, and from shards.

Each training run is its own process (``genkit.training.run.train``, the function behind
``genkit-train``, with checkpointing on, logging and media off), so its peak RSS is its own.

    python scripts/bench_data.py [--count 100000] [--small 10000] [--work /tmp/bench-data] [--steps 110]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

import genkit
from genkit.data.base import DataModule
from genkit.spec import DataSpec

SIZE = 64
BATCH = 128
WARMUP = 10  # training steps before the throughput clock starts
CLASSES = 10


def write_jpegs(task: tuple[Path, int, int]) -> None:
    from PIL import Image

    folder, start, stop = task
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        field = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(field).resize((SIZE, SIZE), Image.BICUBIC)
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (SIZE, SIZE, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"class{i % CLASSES}" / f"{i:07d}.jpg")


def synthetic_folder(folder: Path, count: int) -> Path:
    """``count`` JPEGs in ten class folders (kept when the folder already holds them)."""
    if folder.is_dir() and sum(1 for _ in folder.rglob("*.jpg")) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for label in range(CLASSES):
        (folder / f"class{label}").mkdir(parents=True)
    step = 2000
    tasks = [(folder, start, min(start + step, count)) for start in range(0, count, step)]
    with multiprocessing.get_context("fork").Pool() as pool:
        pool.map(write_jpegs, tasks)
    return folder


def subset_folder(full: Path, folder: Path, count: int) -> Path:
    """The first ``count`` images of ``full`` as links (the same files, a smaller folder)."""
    if folder.is_dir() and sum(1 for _ in folder.rglob("*.jpg")) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for image in sorted(full.rglob("*.jpg"), key=lambda p: p.name)[:count]:
        link = folder / image.parent.name / image.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(image)
    return folder


class StepClock(L.Callback):
    """When the first training step starts (wall clock) and the rate of the steps after ``WARMUP``."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx == 0:
            self.first_step = time.time()
        if batch_idx == WARMUP:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.end, self.steps = time.perf_counter(), batch_idx + 1 - WARMUP
        result = {
            "first_step": self.first_step,
            "samples_per_s": self.steps * BATCH / (self.end - self.start) if self.steps > 0 else 0.0,
        }
        Path(os.environ["BENCH_DATA_RESULT"]).write_text(json.dumps(result))


class TorchvisionFolder(DataModule):
    """torchvision's ImageFolder (resize, centre crop, to tensor) in a DataLoader with two workers:
    the JPEGs decoded again every epoch, as many training scripts do."""

    def __init__(self, seed: int = 0, *, path: str = "", batch_size: int = BATCH) -> None:
        super().__init__()
        self.path, self.batch_size, self.seed = path, batch_size, seed

    @property
    def spec(self) -> DataSpec:
        return DataSpec("image", (3, SIZE, SIZE), "unit_interval")

    def loader(self, shuffle: bool) -> torch.utils.data.DataLoader:
        from torchvision import datasets, transforms

        transform = transforms.Compose([transforms.Resize(SIZE), transforms.CenterCrop(SIZE), transforms.ToTensor()])
        return torch.utils.data.DataLoader(
            datasets.ImageFolder(self.path, transform=transform),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=2,
            persistent_workers=True,
            collate_fn=collate_pairs,
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self.loader(shuffle=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self.loader(shuffle=False)

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        return self.loader(shuffle=False)


def collate_pairs(items: list[tuple[torch.Tensor, int]]) -> dict[str, torch.Tensor]:
    return {"x": torch.stack([x for x, _ in items]), "y": torch.tensor([y for _, y in items])}


def child(result: Path, overrides: list[str]) -> None:
    """One training run in this process; writes its step clock and peak RSS to ``result``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_data

    genkit.register_data("torchvision_folder")(bench_data.TorchvisionFolder)
    os.environ["BENCH_DATA_RESULT"] = str(result)
    from genkit.config import train_config
    from genkit.training.run import train

    cfg = train_config([*overrides, "+callbacks.clock._target_=bench_data.StepClock"])
    train(cfg, result.parent / f"{result.stem}-run")
    measured = json.loads(result.read_text())
    measured["peak_rss_mib"] = peak_rss_mib()
    result.write_text(json.dumps(measured))


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: ``ru_maxrss`` would carry the parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def training_run(name: str, work: Path, data: list[str], steps: int) -> dict[str, float]:
    """A training run in a fresh process: seconds from the command to its first step, samples/s, RSS."""
    result = work / f"{name}.json"
    shutil.rmtree(work / f"{name}-run", ignore_errors=True)
    overrides = [
        *data,
        f"data.batch_size={BATCH}",
        "encoder=conv",
        "decoder=conv",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        f"+trainer.limit_train_batches={steps}",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        "logger=none",
        "callbacks.media=null",
        "callbacks.progress_bar=null",
    ]
    started = time.time()
    subprocess.run([sys.executable, __file__, "--child", str(result), "--", *overrides], check=True)
    measured = json.loads(result.read_text())
    measured["to_first_step"] = measured.pop("first_step") - started
    print(f"[{name}] {measured}", flush=True)
    return measured


def pil_loop(files: list[Path]) -> np.ndarray:
    """The path before this benchmark's subject: every image opened, converted and fitted with PIL in
    one process, stacked and turned into float32 (what ``image_folder`` did at every start)."""
    from PIL import Image, ImageOps

    images = []
    for file in files:
        with Image.open(file) as image:
            images.append(np.asarray(ImageOps.fit(image.convert("RGB"), (SIZE, SIZE))).transpose(2, 0, 1))
    return np.stack(images).astype(np.float32) / 255


def timed(action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000, help="synthetic images (the full size)")
    parser.add_argument("--small", type=int, default=10_000, help="images of the small size (RSS comparison)")
    parser.add_argument("--folder", type=Path, help="a folder of images to use instead of synthetic ones")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-data"), help="scratch folder")
    parser.add_argument("--steps", type=int, default=110, help="training steps per run (the first 10 warm up)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child is not None:
        child(args.child, [a for a in rest if a != "--"])
        return

    from genkit.data.decoding import decode_all, fill_cache
    from genkit.data.images import ImageFolder
    from genkit.data.shards import prepare

    args.work.mkdir(parents=True, exist_ok=True)
    full = args.folder or synthetic_folder(args.work / "images", args.count)
    count = sum(1 for _ in full.rglob("*.jpg"))
    small = subset_folder(full, args.work / "images-small", args.small)
    cache = args.work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    workers = os.cpu_count() or 1

    def folder(path: Path, **options: object) -> ImageFolder:
        return ImageFolder(path=str(path), size=SIZE, channels=3, cache_dir=str(cache), **options)

    print(f"{count} images of {SIZE}x{SIZE} in {full}; {workers} cores", flush=True)
    scanned = timed(lambda: folder(full).recipe())
    recipe = folder(full).recipe()  # scanned once: the timings below decode and write only
    files = [file for items in recipe.items.values() for file, _ in items]
    before = timed(lambda: pil_loop(files))
    one = timed(lambda: decode_all(recipe, workers=1))
    parallel = timed(lambda: decode_all(recipe, workers))
    cached = timed(lambda: fill_cache(recipe, str(cache), workers))
    for name in ("shards", "shards-small"):
        shutil.rmtree(args.work / name, ignore_errors=True)
    prepared = timed(lambda: prepare(recipe, str(args.work / "shards"), workers))
    prepare(folder(small).recipe(), str(args.work / "shards-small"), workers)
    fill_cache(folder(small).recipe(), str(cache), workers)

    image_folder = ["data=image_folder", f"data.size={SIZE}", "data.channels=3"]
    cached_at = [*image_folder, f"data.cache_dir={cache}"]
    shards = ["data=shards", "data.num_workers=2"]
    runs = {
        "uncached": [*image_folder, f"data.path={full}", "data.cache_dir=", "data.workers=1"],
        "cached": [*cached_at, f"data.path={full}"],
        "cached-small": [*cached_at, f"data.path={small}"],
        "shards": [*shards, f"data.path={args.work / 'shards'}"],
        "shards-small": [*shards, f"data.path={args.work / 'shards-small'}"],
        "torchvision": ["data=torchvision_folder", f"data.path={full}"],
    }
    got = {name: training_run(name, args.work, data, args.steps) for name, data in runs.items()}

    seconds = {"before": before, "one": one, "parallel": parallel, "cached": cached, "prepared": prepared}
    rate = {name: count / took for name, took in seconds.items()}
    speed = {name: got[name]["samples_per_s"] for name in ("cached", "shards", "torchvision")}
    timed_steps = args.steps - WARMUP
    print(f"\n{count} JPEGs of {SIZE}x{SIZE}, {workers} cores; conv VAE, batch {BATCH}, {timed_steps} timed steps")
    print("decoding (images/s)")
    row("PIL in one process (the path before)", rate["before"])
    row("genkit's decoder in one process", rate["one"], f"{rate['one'] / rate['before']:.2f}x")
    row(f"genkit's decoder, {workers} processes", rate["parallel"], f"{rate['parallel'] / rate['before']:.2f}x")
    row("  and writing the in-memory cache", rate["cached"], f"{rate['cached'] / rate['before']:.2f}x")
    prepared_ratio = rate["prepared"] / rate["before"]
    row(f"genkit prepare, {workers} processes (into shards)", rate["prepared"], f"{prepared_ratio:.2f}x (target 1.8x)")
    print(f"  (scanning and fingerprinting the folder before any of these: {scanned:.1f} s)")
    print("training (samples/s)")
    row("in memory (cached, 8-bit)", speed["cached"])
    streamed_ratio = speed["shards"] / speed["cached"]
    row("shards, 2 loader workers", speed["shards"], f"{streamed_ratio:.2f}x in memory (target 0.9x)")
    row("torchvision ImageFolder, 2 workers", speed["torchvision"], f"{speed['torchvision'] / speed['cached']:.2f}x")
    print(f"peak RSS of the training process (MiB) at {args.small} and {count} images")
    for name, label in (("shards", "shards"), ("cached", "in memory")):
        small_rss, full_rss = got[f"{name}-small"]["peak_rss_mib"], got[name]["peak_rss_mib"]
        row(f"{label}, {args.small}", small_rss)
        row(f"{label}, {count}", full_rss, f"{full_rss / small_rss:.2f}x")
    row("decoded in one process, no cache", got["uncached"]["peak_rss_mib"])
    print("from the command to the first training step (s), unchanged folder")
    row("decoded in one process, no cache", got["uncached"]["to_first_step"], digits=1)
    row("in memory from the cache", got["cached"]["to_first_step"], digits=1)
    row("shards", got["shards"]["to_first_step"], digits=1)


def row(label: str, value: float, note: str = "", digits: int = 0) -> None:
    print(f"  {label:40s} {value:9.{digits}f}  {note}")


if __name__ == "__main__":
    main()
