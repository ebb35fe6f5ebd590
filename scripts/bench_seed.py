"""The seed model against the seed's own Keras code: test -ELBO at several latent sizes, same data.

    python scripts/bench_seed.py --mnist ../shared/data/mnist [key=value ...] [--train 8000]
                                 [--test 2000] [--latents 2 5 10 20 32] [--seeds 0 1 2] [--epochs 10]

Cuts a real MNIST split from the four official IDX files (the first ``--train`` training and
``--test`` test images), then for every latent size and seed trains

* genkit's ``experiment=seed_mnist`` with ``genkit-train`` (``data.val_size=500`` held out for
  validation; test -ELBO of the best checkpoint on validation), and
* the seed article's Keras code on exactly the training images genkit trains on (the same 500
  held out): Dense 128/64 relu, z_mean and z_log_var, Dense 64/128 relu, 784 sigmoid; summed
  binary cross-entropy + KL; ``Adam()`` (1e-3), batch 128, shuffled; test -ELBO is Keras's own
  loss from ``evaluate`` on the test images (one z per image, as genkit's test -ELBO).

Keras is optional (``pip install -e ".[keras]"``; it runs on the PyTorch backend unless
``KERAS_BACKEND`` says otherwise, or on TensorFlow where that is installed). Without it the genkit figures are
printed beside the Keras figures recorded below. Extra ``key=value`` arguments go to genkit's runs,
for instance ``encoder.init=torch decoder.init=torch posterior.init=torch`` for PyTorch's
initialisation instead of the seed's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import warnings
from pathlib import Path

import numpy as np

from benchlib import cut_split, train_run
from genkit.data.images import hold_out, read_idx

VAL_SIZE = 500
#: Keras 3.15.1 (PyTorch backend) on the default split (8,000/2,000, 10 epochs), seeds 0-2:
#: test -ELBO by latent size, mean of the seeds.
RECORDED_KERAS = {2: 169.7, 5: 148.0, 10: 142.7, 20: 145.0, 32: 148.6}


def keras_seed(latent_dim: int):
    """The seed article's VAE in Keras: its layers, its loss (added in ``call``), its optimiser."""
    import keras
    from keras import layers, ops

    class SeedVAE(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = keras.Sequential([layers.Dense(128, activation="relu"), layers.Dense(64, activation="relu")])
            self.z_mean, self.z_log_var = layers.Dense(latent_dim), layers.Dense(latent_dim)
            self.decoder = keras.Sequential(
                [
                    layers.Dense(64, activation="relu"),
                    layers.Dense(128, activation="relu"),
                    layers.Dense(784, activation="sigmoid"),
                ]
            )
            self.noise = keras.random.SeedGenerator()

        def call(self, x):
            h = self.encoder(x)
            z_mean, z_log_var = self.z_mean(h), self.z_log_var(h)
            z = z_mean + ops.exp(0.5 * z_log_var) * keras.random.normal(ops.shape(z_mean), seed=self.noise)
            reconstruction = self.decoder(z)
            rec = keras.losses.binary_crossentropy(x, reconstruction) * 784
            kl = -0.5 * ops.sum(1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)
            self.add_loss(ops.mean(rec + kl))
            return reconstruction

    model = SeedVAE()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def keras_images(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images genkit trains on (its validation held out) and the test images, flat in [0, 1]."""
    import torch

    def flat(name: str) -> np.ndarray:
        return read_idx(folder / f"{name}-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255

    train, _ = hold_out({"x": torch.from_numpy(flat("train"))}, VAL_SIZE)
    return train["x"].numpy(), flat("t10k")


def keras_nelbo(images: tuple[np.ndarray, np.ndarray], latent_dim: int, seed: int, epochs: int) -> float:
    """Test -ELBO of the Keras seed trained on ``images`` (training, test) with ``seed``."""
    import keras

    train, test = images
    keras.utils.set_random_seed(seed)
    model = keras_seed(latent_dim)
    model.fit(train, epochs=epochs, batch_size=128, shuffle=True, verbose=0)
    return float(model.evaluate(test, batch_size=500, verbose=0))


def keras_available() -> bool:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    warnings.filterwarnings("ignore", "Initializing zero-element tensors")  # Keras building its layers on torch
    try:
        import keras  # noqa: F401
    except ImportError:
        return False
    return True


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.1f} ({min(values):.1f}-{max(values):.1f})" if len(values) > 1 else f"{mean:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, required=True, help="folder with the four official MNIST IDX files")
    parser.add_argument("--train", type=int, default=8000, help="training images (the first N)")
    parser.add_argument("--test", type=int, default=2000, help="test images (the first N)")
    parser.add_argument("--latents", type=int, nargs="+", default=[2, 5, 10, 20, 32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("overrides", nargs="*", help="key=value options for genkit's runs (before --latents)")
    args = parser.parse_args()
    with_keras = keras_available()
    if not with_keras:
        print("Keras is not installed (pip install -e '.[keras]'): genkit's figures beside recorded Keras ones.")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "mnist"
        folder.mkdir()
        cut_split(args.mnist, args.train, args.test, folder)
        images = keras_images(folder) if with_keras else None
        for latent in args.latents:
            genkit, keras = [], []
            for seed in args.seeds:
                run_dir = Path(work) / f"genkit_{latent}_{seed}"
                options = [
                    "experiment=seed_mnist",
                    f"data.root={folder}",
                    f"data.val_size={VAL_SIZE}",
                    f"model.latent_dim={latent}",
                    f"trainer.max_epochs={args.epochs}",
                    f"seed={seed}",
                    "logger=csv",
                    "-q",
                    *args.overrides,
                ]
                genkit.append(train_run(f"genkit latent {latent} seed {seed}", run_dir, options)["test/nelbo"])
                if with_keras:
                    keras.append(keras_nelbo(images, latent, seed, args.epochs))
                    print(f"[keras latent {latent} seed {seed}] test -ELBO {keras[-1]:.2f}", flush=True)
            recorded = RECORDED_KERAS.get(latent)
            reference = statistics.fmean(keras) if keras else recorded
            gap = f"{statistics.fmean(genkit) - reference:+.1f}" if reference is not None else "-"
            rows.append((latent, summary(genkit), summary(keras) if keras else f"{recorded} (recorded)", gap))
    print(f"\ntest -ELBO (nats), {args.train:,}/{args.test:,} MNIST, {args.epochs} epochs, seeds {args.seeds}")
    print(f"{'latent':>6}  {'genkit seed_mnist':>22}  {'Keras seed':>22}  {'genkit - Keras':>14}")
    for latent, ours, theirs, gap in rows:
        print(f"{latent:>6}  {ours:>22}  {theirs:>22}  {gap:>14}")


if __name__ == "__main__":
    main()
