"""Data-parallel scaling: training samples/s with 1 and N processes, side by side in one run.

    python scripts/bench_scaling.py --mnist ../shared/data/mnist [--epochs 4] [--processes 2]
    python scripts/bench_scaling.py --mnist DIR --gpu --processes 1 2 4 8    # on a GPU machine

Trains the seed model (experiment=seed_mnist) and a conv model (encoder=conv decoder=conv,
latent 16) on MNIST with genkit-train: ``trainer=cpu`` (one process) against ``trainer=ddp_cpu
trainer.devices=N`` (N processes, gloo), or ``trainer=gpu`` against ``trainer=ddp
trainer.devices=N`` with ``--gpu``. The global batch is the same in every run (the per-process
batch is divided by N), so every run takes the same optimisation steps. A timing callback
records each epoch's training time on rank zero (validation excluded); samples/s is the median
over epochs after the first. Efficiency = speed-up / N.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

TRAIN_IMAGES = 55000  # MNIST's 60,000 less genkit's 5,000 validation images
GLOBAL_BATCH = 128
MODELS = {
    "seed model (MLP 128/64, latent 2)": ["experiment=seed_mnist"],
    "conv model (latent 16)": ["data=mnist", "encoder=conv", "decoder=conv", "model.latent_dim=16"],
}


class EpochTimer(L.Callback):
    """Seconds of each training epoch (its batches only), appended as JSON lines by rank zero."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx + 1 == trainer.num_training_batches and trainer.is_global_zero:
            with open(self.path, "a") as file:
                file.write(json.dumps(time.perf_counter() - self.start) + "\n")


def samples_per_second(model: list[str], processes: int, args: argparse.Namespace, folder: Path) -> float:
    timings = folder / f"timings-{processes}-{len(list(folder.iterdir()))}.jsonl"
    if processes == 1:
        trainer = ["trainer=gpu"] if args.gpu else ["trainer=cpu"]
    else:
        trainer = ["trainer=ddp" if args.gpu else "trainer=ddp_cpu", f"trainer.devices={processes}"]
    command = [
        str(Path(sys.executable).parent / "genkit-train"),
        *model,
        f"data.root={args.mnist}",
        f"data.batch_size={GLOBAL_BATCH // processes}",
        f"trainer.max_epochs={args.epochs}",
        *trainer,
        "logger=none",
        "callbacks.progress_bar=null",
        "callbacks.media=null",
        "+callbacks.timer._target_=bench_scaling.EpochTimer",
        f"+callbacks.timer.path={timings}",
        f"hydra.run.dir={folder / timings.stem}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    seconds = [json.loads(line) for line in timings.read_text().splitlines()]
    return TRAIN_IMAGES / statistics.median(seconds[1:] or seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is warm-up)")
    parser.add_argument("--processes", type=int, nargs="+", default=[2], help="process counts to compare with 1")
    parser.add_argument("--gpu", action="store_true", help="one process per GPU instead of CPU processes")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; global batch {GLOBAL_BATCH}; {args.epochs} epochs per run\n")
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in MODELS.items():
            base = samples_per_second(model, 1, args, Path(tmp))
            print(f"{name}\n  1 process : {base:8.0f} samples/s")
            for n in args.processes:
                speed = samples_per_second(model, n, args, Path(tmp))
                gain = speed / base
                print(f"  {n} processes: {speed:8.0f} samples/s  speed-up {gain:.2f}  efficiency {gain / n:.2f}")


if __name__ == "__main__":
    main()
