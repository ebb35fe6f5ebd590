"""What the benchmark scripts share: finding genkit's console scripts, timing one training run, and
cutting a smaller MNIST out of the official files."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path


def console_script(name: str) -> str:
    """The console script installed beside this Python (else ``name`` on the PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def offline_env(home: Path) -> dict[str, str]:
    """This environment as a user without a W&B key sees it: W&B offline, ``home`` as HOME, runs under it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", HOME=str(home), GENKIT_LOG_DIR=str(home / "outputs"))
    return env


def train_run(name: str, run_dir: Path, overrides: list[str]) -> dict[str, float]:
    """One ``genkit-train`` run in ``run_dir``, timed; its final metrics (best checkpoint on val -ELBO)."""
    args = [console_script("genkit-train"), *overrides, f"hydra.run.dir={run_dir}"]
    print(f"[{name}] {' '.join(args[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(args, check=True)
    print(f"[{name}] trained in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


IDX_MAGIC = {3: 0x803, 1: 0x801}  # unsigned bytes, 3 or 1 dimensions


def write_idx(path: Path, array) -> None:  # noqa: ANN001 (a uint8 numpy array)
    """``array`` (uint8) as a gzipped IDX file, the format genkit's MNIST module reads."""
    header = struct.pack(">I", IDX_MAGIC[array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes(), mtime=0))


def cut_split(mnist: Path, train: int, test: int, folder: Path) -> None:
    """The first ``train`` training and ``test`` test images (and labels) of MNIST, into ``folder``."""
    from genkit.data.images import read_idx

    for name, size in (("train", train), ("t10k", test)):
        for kind in ("images-idx3", "labels-idx1"):
            source = next(mnist.glob(f"{name}-{kind}-ubyte*"))
            write_idx(folder / f"{name}-{kind}-ubyte.gz", read_idx(source)[:size])
