"""genkit's training overhead against a plain PyTorch loop, measured side by side in one process.

Trains the seed model (experiment=seed_mnist: Dense 128/64, latent 2, BCE + KL, Adam
1e-3, batch 128) on the same in-memory MNIST through genkit's own training path
(``genkit.training.run.train``, the function behind ``genkit-train``, with its default
callbacks: checkpointing, progress bar, media, and validation every epoch) and through
hand-written loops. Machine speed here drifts by tens of percent over seconds, so the
runs are interleaved in blocks: after every 43 genkit training steps, two plain loops
each take as many steps on the same data: one as a user writes it (PyTorch's default
Adam, on CPU the per-tensor implementation, and torch's BCE-with-logits) and one with
the kernels genkit chooses (fused Adam, genkit's BCE), which leaves genkit's overhead
alone. Each block of genkit steps and each plain step is timed; ratios are of total time
over all epochs but the first (warm-up), validation excluded, and genkit's own cost per step is
printed in milliseconds. ``--batch`` shows how the ratios move with the batch size; ``--hidden 8
--latent 2 --batch 8`` makes the kernels cost next to nothing, so what is left is the host-side
time per step that a GPU, whose kernels are fast, would also wait for. ``--model conv`` trains
genkit's conv encoder and decoder (``encoder=conv decoder=conv``, their default widths) instead,
the plain loops using the same two modules. ``--bound-only ROUNDS`` does not train: it times
genkit's step without Lightning (the model's bound, loss, epoch sums, NaN check, backward and
optimiser step: ``BoundPath``) against the plain loop with genkit's kernels, interleaved, which
isolates what the bound's distribution objects and part modules cost from Lightning's hooks.
``--lightning-floor`` trains the plain loop with genkit's kernels as a bare ``LightningModule``
(manual optimisation; no logger, checkpointing, progress bar or callbacks but the timing one;
genkit's data module and profiler) in genkit's place: what any tool built on Lightning's loop pays
per step at the least, the floor under genkit's own cost.

    python scripts/bench_overhead.py --mnist ../shared/data/mnist [--epochs 6] [--batch 128]
    python scripts/bench_overhead.py --mnist ../shared/data/mnist --hidden 8 --latent 2 --batch 8 --bound-only 40
    python scripts/bench_overhead.py --mnist ../shared/data/mnist --hidden 8 --latent 2 --batch 8 --epochs 3
    python scripts/bench_overhead.py --mnist ../shared/data/mnist --epochs 3 --lightning-floor
    python scripts/bench_overhead.py --mnist ../shared/data/mnist --model conv --epochs 3 [--compile inductor]
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
from omegaconf import DictConfig
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits

from genkit.parts.decoders import ConvDecoder
from genkit.parts.encoders import ConvEncoder
from genkit.parts.likelihoods import BinaryCrossEntropyWithLogits
from genkit.spec import DataSpec
from genkit.training.metrics import EpochSums
from genkit.training.optimization import guard_finite
from genkit.training.run import Unprofiled, skip_nvml_probe_without_gpu

#: Set from the command line before training: the model (mlp: the seed's; conv), batch size, hidden
#: widths (mlp), latent size.
SHAPE = {"model": "mlp", "batch": 128, "hidden": (128, 64), "latent": 2}
BLOCK = 43  # genkit steps between rounds of plain steps: a tenth of an epoch at batch 128
#: The timed paths: genkit's, then the plain loops (``steps``: how many steps each took).
TIMED = ("genkit", "default", "kernels")
#: Per training epoch, seconds spent in genkit's steps and in each plain loop's steps (``TIMED``), and
#: how many steps each timed (``steps``).
EPOCHS: list[dict[str, float]] = []


def bce_with_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return binary_cross_entropy_with_logits(logits, target, reduction="none")


def dense(widths: list[int]) -> list[nn.Module]:
    """Linear layers between consecutive ``widths``, each followed by a ReLU."""
    return [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())]


class Loop:
    """Steps on the batches of a shuffled epoch of ``x``, drawn as a user's loop draws them; ``train_on``
    is the step itself."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.order = torch.randperm(len(x))
        self.position = 0

    def step(self) -> float:
        """One optimiser step on the next batch; returns its seconds."""
        start = time.perf_counter()
        if self.position >= len(self.x):
            self.order, self.position = torch.randperm(len(self.x)), 0
        batch = self.x.index_select(0, self.order[self.position : self.position + SHAPE["batch"]])
        self.position += SHAPE["batch"]
        self.train_on(batch)
        return time.perf_counter() - start

    def train_on(self, batch: torch.Tensor) -> None:
        raise NotImplementedError


class PlainLoop(Loop):
    """The seed Keras model (``SHAPE``'s widths) written out by hand, or genkit's conv encoder and
    decoder modules with a linear posterior head."""

    def __init__(self, x: torch.Tensor, genkit_kernels: bool) -> None:
        torch.manual_seed(0)
        latent = SHAPE["latent"]
        if SHAPE["model"] == "conv":
            spec = DataSpec("image", tuple(x.shape[1:]), "unit_interval")  # MNIST's
            conv = ConvEncoder(spec)
            self.encoder = nn.Sequential(conv, nn.Linear(conv.out_features, 2 * latent))
            self.decoder = nn.Sequential(
                ConvDecoder(spec, latent_dim=latent, param_shape=spec.event_shape), nn.Flatten()
            )
        else:
            hidden = list(SHAPE["hidden"])
            self.encoder = nn.Sequential(nn.Flatten(), *dense([784, *hidden]), nn.Linear(hidden[-1], 2 * latent))
            self.decoder = nn.Sequential(*dense([latent, *hidden[::-1]]), nn.Linear(hidden[0], 784))
        parameters = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.optimizer = torch.optim.Adam(parameters, lr=1e-3, fused=genkit_kernels or None)
        self.bce = BinaryCrossEntropyWithLogits.apply if genkit_kernels else bce_with_logits
        super().__init__(x)

    def nelbo(self, batch: torch.Tensor) -> torch.Tensor:
        """Each example's -ELBO, one posterior sample."""
        mu, log_var = self.encoder(batch).chunk(2, dim=-1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        rec = self.bce(self.decoder(z), batch.flatten(1)).sum(-1)
        kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(-1)
        return rec + kl

    def train_on(self, batch: torch.Tensor) -> None:
        loss = self.nelbo(batch).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


class BoundPath(Loop):
    """genkit's step without Lightning: what ``VAE.train_on`` computes (the model's ``elbo_terms``, loss,
    epoch sums and CPU NaN check), backward and the optimiser genkit configures."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor) -> None:
        self.model = model.train()
        self.optimizer = model.configure_optimizers()
        self.sums = EpochSums()
        super().__init__(x)

    def train_on(self, batch: torch.Tensor) -> None:
        model = self.model
        terms = model.elbo_terms(batch, None, model.iwae_k)
        loss = model.loss(terms, model.beta)
        self.sums.add(model.batch_sums("train", batch, terms, loss), len(batch))
        guard_finite(model, loss, None, 0, 1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


class BareLightning(L.LightningModule):
    """The plain loop with genkit's kernels as a bare ``LightningModule`` with manual optimisation, as
    genkit's model steps: the same step, with only Lightning's loop and hooks around it."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.plain = PlainLoop(x, genkit_kernels=True)
        self.encoder, self.decoder = self.plain.encoder, self.plain.decoder

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.plain.optimizer

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        optimizer = self.optimizers()
        loss = self.plain.nelbo(batch["x"]).mean()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()


def train_bare(cfg: DictConfig, epochs: int) -> None:
    """``BareLightning`` trained on genkit's data module for ``cfg``, timed by ``InterleavedSteps``."""
    from genkit.compose import compose

    datamodule, _ = compose(cfg)
    datamodule.setup("fit")
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        profiler=Unprofiled(),
        callbacks=[InterleavedSteps()],
    )
    trainer.fit(BareLightning(datamodule.splits["train"]["x"]), datamodule=datamodule)


class InterleavedSteps(L.Callback):
    """After each block of genkit training steps, as many steps of each plain loop; all timed.

    genkit's time runs from the end of the last plain block to the end of its own steps, so
    it holds everything Lightning does per step (data, hooks, callbacks); the first interval
    of an epoch (which follows validation) is left out. Blocks of ``BLOCK`` steps (a tenth of
    an epoch, ~0.2 s) are short enough that the machine's speed does not drift within a round
    and long enough that each path runs with its own code and data warm in the caches.
    """

    def __init__(self) -> None:
        self.plain: dict[str, PlainLoop] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        if not self.plain:
            x = trainer.datamodule.splits["train"]["x"]
            self.plain = {name: PlainLoop(x, genkit_kernels=name == "kernels") for name in ("default", "kernels")}
        import bench_overhead  # the module Hydra imported this class from, not __main__

        self.seconds = dict.fromkeys(["genkit", *self.plain, "steps"], 0.0)
        self.steps = 0
        bench_overhead.EPOCHS.append(self.seconds)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx == 0:
            self.resumed = time.perf_counter()
            return
        self.steps += len(batch) if isinstance(batch, list) else 1  # a group of steps_per_execution batches
        if self.steps < BLOCK and batch_idx + 1 < trainer.num_training_batches:
            return
        self.seconds["genkit"] += time.perf_counter() - self.resumed
        for name, loop in self.plain.items():
            self.seconds[name] += sum(loop.step() for _ in range(self.steps))
        self.seconds["steps"] += self.steps
        self.steps = 0
        self.resumed = time.perf_counter()


def bound_only(cfg: DictConfig, rounds: int) -> None:
    """genkit's step without Lightning against the plain loop with the same kernels: ``rounds`` blocks of
    ``BLOCK`` steps each, alternating, after one block each of warm-up; the medians over the rounds of
    each path's time per step and of their difference in the same round (the machine's hiccups move
    single rounds), which is the cost of genkit's bound (its distribution objects, part modules,
    epoch sums and NaN check) alone."""
    from genkit.compose import compose

    torch.distributions.Distribution.set_default_validate_args(False)  # as genkit-train runs
    datamodule, model = compose(cfg)
    if cfg.get("compile"):
        model.compile_bound(cfg.compile)  # compiled in the first (warm-up) round
    datamodule.setup("fit")
    x = datamodule.splits["train"]["x"]
    loops = {"genkit": BoundPath(model, x), "kernels": PlainLoop(x, genkit_kernels=True)}
    per_step: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds + 1):
        for name, loop in loops.items():
            per_step[name].append(1e3 * sum(loop.step() for _ in range(BLOCK)) / BLOCK)
    genkit, kernels = per_step["genkit"][1:], per_step["kernels"][1:]  # the first round warms up
    own = statistics.median(g - k for g, k in zip(genkit, kernels))
    print(f"\nbatch {SHAPE['batch']}, {rounds} rounds of {BLOCK} steps, torch threads {torch.get_num_threads()}")
    print(f"plain loop with genkit's kernels: {statistics.median(kernels):.3f} ms/step (median of rounds)")
    print(f"genkit's bound, no Lightning:     {statistics.median(genkit):.3f} ms/step")
    print(f"the bound's own cost per step:    {own:.3f} ms (median of the rounds' differences)")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs (the first is warm-up)")
    parser.add_argument("--model", choices=["mlp", "conv"], default="mlp", help="the seed's MLP or genkit's conv parts")
    parser.add_argument("--batch", type=int, default=128, help="batch size")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 64], help="encoder widths (the decoder mirrors)")
    parser.add_argument("--latent", type=int, default=2, help="latent size")
    parser.add_argument("--compile", default=None, help="torch.compile backend for genkit's bound (inductor)")
    parser.add_argument("--steps-per-execution", type=int, default=1, help="genkit's trainer.steps_per_execution")
    parser.add_argument(
        "--bound-only",
        type=int,
        metavar="ROUNDS",
        help="time genkit's step without Lightning (BoundPath) against the plain loop with genkit's kernels, "
        "in ROUNDS interleaved blocks, instead of training",
    )
    parser.add_argument(
        "--lightning-floor",
        action="store_true",
        help="train the plain loop with genkit's kernels as a bare LightningModule in genkit's place",
    )
    args = parser.parse_args()
    if args.lightning_floor and (args.compile or args.steps_per_execution != 1 or args.bound_only):
        parser.error("--lightning-floor takes the plain loop's eager step, one batch at a time, instead of genkit's")
    skip_nvml_probe_without_gpu()  # as genkit-train does, for every path and plain loop alike
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_overhead  # the module Hydra imports the callback from, not __main__
    from genkit.config import train_config
    from genkit.training.run import train

    shape = {"model": args.model, "batch": args.batch, "hidden": tuple(args.hidden), "latent": args.latent}
    bench_overhead.SHAPE.update(shape)
    SHAPE.update(shape)  # this module runs as __main__: --bound-only uses its own classes
    parts = (
        ["encoder=conv", "decoder=conv"]
        if args.model == "conv"
        else [
            f"encoder.hidden=[{','.join(map(str, args.hidden))}]",
            f"decoder.hidden=[{','.join(map(str, args.hidden[::-1]))}]",
        ]
    )
    overrides = [
        "experiment=seed_mnist",
        f"data.root={args.mnist}",
        f"data.batch_size={args.batch}",
        *parts,
        f"model.latent_dim={args.latent}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.accelerator=cpu",
        "logger=none",
        "+callbacks.interleaved._target_=bench_overhead.InterleavedSteps",
        *([f"compile={args.compile}"] if args.compile else []),
        f"trainer.steps_per_execution={args.steps_per_execution}",
    ]
    cfg = train_config(overrides)
    if args.bound_only:
        bound_only(cfg, args.bound_only)
        return
    if args.lightning_floor:
        train_bare(cfg, args.epochs)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, Path(tmp))
    warm_up, epochs = bench_overhead.EPOCHS[0], bench_overhead.EPOCHS[1:]
    encoder = "conv (32, 64), 256" if args.model == "conv" else f"784-{'-'.join(map(str, args.hidden))}"
    print(
        f"\nencoder {encoder}, latent {args.latent}, 55000 training images, "
        f"batch {args.batch}, steps per execution {args.steps_per_execution}, torch threads {torch.get_num_threads()}"
    )
    who = "bare Lightning" if args.lightning_floor else "genkit"
    for i, epoch in enumerate(epochs, start=2):
        rates = "  ".join(
            f"{who if name == 'genkit' else name} {epoch['steps'] * args.batch / epoch[name]:7.0f}" for name in TIMED
        )
        print(f"epoch {i}: samples/s {rates}")
    total = {name: sum(epoch[name] for epoch in epochs) for name in epochs[0]}
    rate = {name: total["steps"] * args.batch / total[name] for name in TIMED}
    per_step = {name: 1000 * total[name] / total["steps"] for name in TIMED}
    print(
        f"\nplain loop (default Adam, torch's BCE): {rate['default']:8.0f} samples/s  {per_step['default']:.3f} ms/step"
    )
    print(
        f"plain loop with genkit's kernels:       {rate['kernels']:8.0f} samples/s  {per_step['kernels']:.3f} ms/step"
    )
    print(f"{who + ' path:':<40}{rate['genkit']:8.0f} samples/s  {per_step['genkit']:.3f} ms/step")
    ratio, same_kernels = total["default"] / total["genkit"], total["kernels"] / total["genkit"]
    print(f"ratio {who} / plain loop:                      {ratio:.3f}  (target >= 0.9)")
    print(f"ratio {who} / plain loop with genkit's kernels: {same_kernels:.3f}  (target >= 0.9)")
    print(f"{who}'s own cost per step: {per_step['genkit'] - per_step['kernels']:.3f} ms (target <= 0.3)")
    print(f"first epoch (warm-up{', compiling' if args.compile else ''}): {who} {warm_up['genkit']:.1f} s")
    print(f"peak RSS (both paths, MNIST in memory): {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
