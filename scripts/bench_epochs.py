"""Whole epochs as a user meets them: genkit-train against plain PyTorch loops that also validate.

genkit-train runs the seed model (experiment=seed_mnist) on the first 8,000 MNIST training images
(500 held out for validation) with its default callbacks (checkpointing, media, W&B offline),
validating every epoch. Its time per epoch is (a long run - a short run) / the epochs between
them, so start-up and the final evaluation cancel. Beside it, in this process, the same model as a
plain loop over the same 7,500 images and 500 validation images, each epoch a shuffled pass and a
validation pass: once as a user writes it (default Adam, torch's BCE) and once with genkit's kernels
(fused Adam, genkit's BCE). Rounds alternate the three (the machine's speed drifts); medians are
printed with genkit's own cost per epoch and per step in milliseconds.

    python scripts/bench_epochs.py --mnist ../shared/data/mnist [--rounds 3] [--short 2] [--long 22]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from bench_overhead import SHAPE, PlainLoop
from benchlib import console_script, cut_split, offline_env

TRAIN, TEST, VAL_SIZE = 8000, 2000, 500


def genkit_seconds(folder: Path, epochs: int, run_dir: Path, env: dict[str, str]) -> float:
    """Wall time of one genkit-train run of ``epochs`` epochs."""
    args = [
        console_script("genkit-train"),
        "experiment=seed_mnist",
        f"data.root={folder}",
        f"data.val_size={VAL_SIZE}",
        f"trainer.max_epochs={epochs}",
        f"hydra.run.dir={run_dir}",
    ]
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def plain_epoch_seconds(loop: PlainLoop, val: torch.Tensor, epochs: int) -> float:
    """Seconds per epoch of ``loop``: a shuffled pass over its images, then a validation pass."""
    steps = -(-len(loop.x) // SHAPE["batch"])
    start = time.perf_counter()
    for _ in range(epochs):
        loop.position = len(loop.x)  # a new shuffled pass
        for _ in range(steps):
            loop.step()
        with torch.no_grad():
            for batch in val.split(4 * SHAPE["batch"]):
                loop.nelbo(batch).sum().item()
    return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", type=Path, required=True, help="folder with the four official MNIST IDX files")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians reported)")
    parser.add_argument("--short", type=int, default=2, help="epochs of the short genkit run")
    parser.add_argument("--long", type=int, default=22, help="epochs of the long genkit run")
    args = parser.parse_args()
    from genkit.data.images import hold_out, read_idx

    work = Path(tempfile.mkdtemp(prefix="genkit-epochs-"))
    folder = work / "mnist"
    folder.mkdir()
    cut_split(args.mnist, TRAIN, TEST, folder)
    images = torch.tensor(read_idx(folder / "train-images-idx3-ubyte.gz"), dtype=torch.float32).div(255)[:, None]
    train, val = hold_out({"x": images}, VAL_SIZE)  # genkit's own hold-out: the same 7,500 and 500
    env = offline_env(work)
    loops = {name: PlainLoop(train["x"], genkit_kernels=name == "kernels") for name in ("plain", "kernels")}
    for loop in loops.values():
        plain_epoch_seconds(loop, val["x"], 1)  # warm-up
    per_epoch: dict[str, list[float]] = {"genkit": [], **{name: [] for name in loops}}
    for round_ in range(args.rounds):
        short = genkit_seconds(folder, args.short, work / f"short-{round_}", env)
        long = genkit_seconds(folder, args.long, work / f"long-{round_}", env)
        per_epoch["genkit"].append((long - short) / (args.long - args.short))
        for name, loop in loops.items():
            per_epoch[name].append(plain_epoch_seconds(loop, val["x"], args.long - args.short))
        print(f"round {round_ + 1}/{args.rounds}: " + "  ".join(f"{k} {v[-1]:.3f} s" for k, v in per_epoch.items()))
    median = {name: statistics.median(values) for name, values in per_epoch.items()}
    steps = -(-len(train["x"]) // SHAPE["batch"])
    print(f"\nseed model, {len(train['x'])} training and {VAL_SIZE} validation images, batch {SHAPE['batch']}, "
          f"{steps} steps an epoch; seconds per epoch, medians of {args.rounds} rounds")  # fmt: skip
    for name, label in (("plain", "plain loop as a user writes it"), ("kernels", "plain loop, genkit's kernels")):
        print(f"{label:<32} {median[name]:.3f} s   genkit / it: {median[name] / median['genkit']:.3f}")
    print(f"{'genkit-train':<32} {median['genkit']:.3f} s   (target >= 0.9 of the plain loop that validates)")
    overhead = median["genkit"] - median["kernels"]
    print(f"genkit's own cost: {1000 * overhead:.0f} ms per epoch, {1000 * overhead / steps:.2f} ms per step")


if __name__ == "__main__":
    main()
