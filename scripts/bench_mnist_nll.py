"""Test NLL on dynamically binarised MNIST: the IWAE paper's VAE against genkit's best configuration,
each trained for the same wall-clock budget, with the NLL traced against epochs and minutes.

    python scripts/bench_mnist_nll.py DATA_DIR [--minutes 30] [--every 5] [--k 5000]
                                      [--curve-examples 1000] [--test-examples 10000] [key=value ...]

DATA_DIR holds the four official MNIST IDX files. Protocol (``../shared/notes/quality-anchors.md``
1.1): pixels resampled as Bernoulli draws every training step, 60k training images of which the
last 400 are held out for validation (as IWAE's code does), the 10k official test images
binarised once with a fixed seed, NLL = the importance-weighted bound with k=5000 (Burda et al.).

Models, both trained by ``genkit-train`` on the same data and seed:

* ``iwae_paper_vae``: Burda et al. (2016)'s one-stochastic-layer VAE: 784-200-200-50 tanh MLPs,
  Bernoulli decoder, Adam (eps 1e-4), batch 20, their learning-rate decay (``scheduler=multistep``).
  Their Table 1 reports 86.76 nats after 3,280 epochs (84.78 for IWAE with k=50).
* ``genkit_best``: a VampPrior (500 pseudo-inputs; Tomczak & Welling 2018 report 85.57 on static
  MNIST for a one-layer MLP VAE) on 300-300 GELU MLPs with a 40-d latent, batch 100, a short
  linear KL warm-up. ``--best "..."`` replaces its overrides (for instance
  ``--best "encoder=conv decoder=conv prior=vamp"`` on a GPU, where convolutions cost little).

Every ``--every`` epochs a checkpoint is kept; afterwards each is scored with k samples on the
first ``--curve-examples`` test images (the curve) and the last one on ``--test-examples`` (the
result). Minutes are wall-clock from the start of ``genkit-train`` to the checkpoint's write,
start-up and validation included. Extra ``key=value`` arguments go to both runs (``trainer=gpu``:
the script runs unchanged on a GPU). The defaults suit a GPU; on the 2-core development CPU,
k=5000 costs ~22 s (paper VAE) and ~62 s (genkit_best) per 200 test images, so the README's CPU
figures used ``--minutes 15 --curve-examples 200 --test-examples 2000``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import torch

from benchlib import console_script

PAPER_VAE = [
    "encoder=mlp",
    "decoder=mlp",
    "prior=normal",
    "encoder.hidden=[200,200]",
    "decoder.hidden=[200,200]",
    "encoder.activation=tanh",
    "decoder.activation=tanh",
    "model.latent_dim=50",
    "data.batch_size=20",
    "optim.lr=1e-3",
    "+optim.eps=1e-4",
    "scheduler=multistep",
]
GENKIT_BEST = [
    "encoder=mlp",
    "decoder=mlp",
    "prior=vamp",
    "encoder.hidden=[300,300]",
    "decoder.hidden=[300,300]",
    "encoder.activation=gelu",
    "decoder.activation=gelu",
    "model.latent_dim=40",
    "model.kl_schedule=linear",
    "model.kl_warmup_steps=2000",
    "data.batch_size=100",
    "optim.lr=1e-3",
]
#: MNIST's 60k training images less the 400 held out for validation.
TRAIN_IMAGES = 59_600
PUBLISHED = [
    ("Burda et al. 2016 VAE, 3,280 epochs", 86.76),
    ("Burda et al. 2016 IWAE k=50, 3,280 epochs", 84.78),
    ("Tomczak & Welling 2018 VampPrior, static MNIST", 85.57),
]


def train(name: str, out: Path, data: Path, minutes: float, every: int, overrides: list[str]) -> tuple[Path, float]:
    """Train for ``minutes`` of wall clock, keeping a checkpoint every ``every`` epochs; the run
    folder and the time training started (for the checkpoints' wall-clock ages)."""
    run_dir = out / name
    budget = time.strftime("00:%H:%M:%S", time.gmtime(minutes * 60))
    args = [
        console_script("genkit-train"),
        "data=mnist",
        f"data.root={data}",
        "data.binarize=dynamic",
        "data.val_size=400",
        "likelihood=bernoulli",
        "trainer.max_epochs=3280",
        f"+trainer.max_time={budget}",
        f"+callbacks.model_checkpoint.every_n_epochs={every}",
        "+callbacks.model_checkpoint.save_top_k=-1",
        "callbacks.progress_bar.refresh_rate=500",
        "logger=csv",
        *overrides,
        f"hydra.run.dir={run_dir}",
    ]
    print(f"[{name}] {' '.join(args[1:])}", flush=True)
    start = time.time()
    subprocess.run(args, check=True)
    print(f"[{name}] trained in {(time.time() - start) / 60:.1f} min", flush=True)
    return run_dir, start


def score(model: torch.nn.Module, images: torch.Tensor, k: int, device: torch.device) -> dict[str, float]:
    """-ELBO and the k-sample NLL of ``model`` on ``images``."""
    from genkit.training.metrics import evaluate

    batches = [{"x": images[i : i + 100]} for i in range(0, len(images), 100)]
    torch.manual_seed(0)
    return evaluate(model, batches, k, 1 << 26, device)


def epochs_trained(stored: dict) -> float:
    """Passes over the training set before a checkpoint was written (fractional if cut by the budget)."""
    batch_size = stored["genkit"]["config"]["data"]["batch_size"]
    return stored["global_step"] / math.ceil(TRAIN_IMAGES / batch_size)


def curve(name: str, run_dir: Path, start: float, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """One row per kept checkpoint, in training order, the last scored on the full test set."""
    from genkit.checkpoint import model_from_checkpoint, read_checkpoint
    from genkit.cli.trained import Trained

    kept = sorted(run_dir.glob("checkpoints/epoch*.ckpt")) + [run_dir / "checkpoints" / "last.ckpt"]
    rows, test_images = [], None
    for checkpoint in kept:
        stored, run_cfg = read_checkpoint(checkpoint)
        model = model_from_checkpoint(stored, run_cfg, checkpoint)
        if test_images is None:  # loaded once: every checkpoint of the run sees the same binarised images
            test_images = Trained(checkpoint, model, run_cfg).data({})[0].splits["test"]["x"]
        epoch = epochs_trained(stored)
        minutes = (checkpoint.stat().st_mtime - start) / 60
        final = checkpoint.name == "last.ckpt"
        examples = args.test_examples if final else args.curve_examples
        began = time.perf_counter()
        metrics = score(model, test_images[:examples], args.k, device)
        row = {"model": name, "epochs": epoch, "minutes": minutes, "examples": examples, "final": final, **metrics}
        rows.append(row)
        print(
            f"[{name}] {epoch:>7.1f} epochs {minutes:>7.1f} min  NLL {metrics['nll']:8.2f}"
            f"  -ELBO {metrics['nelbo']:8.2f}  ({examples} test images, k={args.k},"
            f" scored in {time.perf_counter() - began:.0f} s)",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="folder with the four MNIST IDX files")
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget of each model")
    parser.add_argument("--every", type=int, default=5, help="keep a checkpoint every this many epochs")
    parser.add_argument("--k", type=int, default=5000, help="importance samples per test image")
    parser.add_argument("--curve-examples", type=int, default=1000, help="test images for the curve's points")
    parser.add_argument("--test-examples", type=int, default=10000, help="test images for the final result")
    parser.add_argument("--best", help="genkit_best's overrides in one string, replacing the default ones")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_mnist_nll"))
    parser.add_argument("overrides", nargs="*", help="extra genkit-train overrides for both runs")
    args = parser.parse_intermixed_args()
    if not list(args.data.glob("train-images-idx3-ubyte*")):
        parser.error(f"{args.data} has no train-images-idx3-ubyte[.gz]: give the folder of the MNIST IDX files")
    if args.out.exists():
        shutil.rmtree(args.out)
    device = torch.device(args.device)

    rows = []
    for name, overrides in (
        ("iwae_paper_vae", PAPER_VAE),
        ("genkit_best", GENKIT_BEST if args.best is None else args.best.split()),
    ):
        run_dir, start = train(name, args.out, args.data, args.minutes, args.every, [*overrides, *args.overrides])
        rows += curve(name, run_dir, start, args, device)

    print(f"\nMNIST (dynamic binarisation) test NLL, nats, k={args.k}, {args.minutes:g} min of training each")
    print(f"{'model':<56}{'epochs':>8}{'minutes':>9}{'images':>8}{'NLL':>9}{'-ELBO':>9}")
    for row in rows:
        print(
            f"{row['model'] + (' (final)' if row['final'] else ''):<56}{row['epochs']:>8.1f}{row['minutes']:>9.1f}"
            f"{row['examples']:>8}{row['nll']:>9.2f}{row['nelbo']:>9.2f}"
        )
    for name, nll in PUBLISHED:
        print(f"{name + ' (published)':<56}{'':>8}{'':>9}{10_000:>8}{nll:>9.2f}")
    finals = {row["model"]: row["nll"] for row in rows if row["final"]}
    gap = finals["genkit_best"] - finals["iwae_paper_vae"]
    print(f"genkit_best - iwae_paper_vae at equal wall clock: {gap:+.2f} nats")
    summary = {"minutes": args.minutes, "k": args.k, "rows": rows, "published": dict(PUBLISHED)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"written to {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
