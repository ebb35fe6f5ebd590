"""genkit's training overhead against a plain PyTorch loop, measured side by side in one process.

Trains the seed model (experiment=seed_mnist: Dense 128/64, latent 2, BCE + KL, Adam
1e-3, batch 128) on the same in-memory MNIST through genkit's own training path
(``genkit.train.train``, the function behind ``genkit-train``, with its default
callbacks: checkpointing, progress bar, media, and validation every epoch) and through
a hand-written loop. Machine speed here drifts by tens of percent over seconds, so the
runs are paired: right after each genkit training epoch (validation excluded) two plain
loops each train one epoch on the same data, one with PyTorch's default Adam (on CPU the
per-tensor implementation) and one with ``foreach=True`` as genkit's optim configs set.
Ratios are medians over the pairs.

    python scripts/bench_overhead.py --mnist ../shared/data/mnist [--epochs 8]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

BATCH = 128
PAIRS: list[tuple[float, float, float]] = []  # seconds per epoch: genkit, plain, plain with foreach Adam


class PlainLoop:
    """The seed Keras model written out by hand: one epoch per call, state kept between calls."""

    def __init__(self, x: torch.Tensor, foreach: bool | None) -> None:
        torch.manual_seed(0)
        self.x = x
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 4)
        )
        self.decoder = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 784))
        parameters = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.optimizer = torch.optim.Adam(parameters, lr=1e-3, foreach=foreach)

    def epoch(self) -> float:
        start = time.perf_counter()
        order = torch.randperm(len(self.x))
        for i in range(0, len(self.x), BATCH):
            batch = self.x.index_select(0, order[i : i + BATCH])
            mu, log_var = self.encoder(batch).chunk(2, dim=-1)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
            rec = F.binary_cross_entropy_with_logits(self.decoder(z), batch.flatten(1), reduction="none").sum(-1)
            kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(-1)
            loss = (rec + kl).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - start


class PairedEpochs(L.Callback):
    """Times genkit's training batches of each epoch, then runs one plain epoch right after."""

    def __init__(self) -> None:
        self.plain: list[PlainLoop] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        if not self.plain:
            x = trainer.datamodule.splits["train"]["x"]
            self.plain = [PlainLoop(x, foreach=None), PlainLoop(x, foreach=True)]
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx + 1 == trainer.num_training_batches:
            genkit_seconds = time.perf_counter() - self.start
            import bench_overhead  # the module Hydra imported this class from, not __main__

            bench_overhead.PAIRS.append((genkit_seconds, *(loop.epoch() for loop in self.plain)))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=8, help="paired epochs (the first is warm-up)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hydra import compose, initialize_config_dir

    import bench_overhead
    from genkit import plugins
    from genkit.train import train

    plugins.load()
    overrides = [
        "experiment=seed_mnist",
        f"data.root={args.mnist}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.accelerator=cpu",
        "logger=none",
        "+callbacks.paired._target_=bench_overhead.PairedEpochs",
    ]
    with initialize_config_dir(config_dir=str(plugins.config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp))
    samples = 55000  # both paths see every training image once per epoch
    pairs = bench_overhead.PAIRS[1:]
    print(f"\nseed model, {samples} training images, batch {BATCH}, torch threads {torch.get_num_threads()}")
    for i, (g, p, f) in enumerate(pairs, start=2):
        print(f"epoch {i}: samples/s genkit {samples / g:7.0f}  plain {samples / p:7.0f}  foreach {samples / f:7.0f}")
    print(f"\nplain loop, default Adam:   {statistics.median(samples / p for _, p, _ in pairs):8.0f} samples/s")
    print(f"plain loop, foreach Adam:   {statistics.median(samples / f for _, _, f in pairs):8.0f} samples/s")
    print(f"genkit-train path:          {statistics.median(samples / g for g, _, _ in pairs):8.0f} samples/s")
    ratio = statistics.median(p / g for g, p, _ in pairs)
    same_optimizer = statistics.median(f / g for g, _, f in pairs)
    print(f"ratio genkit / plain loop:                 {ratio:.3f}  (target >= 0.9)")
    print(f"ratio genkit / plain loop, same optimizer: {same_optimizer:.3f}  (genkit's overhead alone)")
    print(f"peak RSS (both paths, MNIST in memory): {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
