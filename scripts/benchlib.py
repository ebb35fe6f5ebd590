"""What the benchmark scripts share: finding genkit's console scripts and timing one training run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def console_script(name: str) -> str:
    """The console script installed beside this Python (else ``name`` on the PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def train_run(name: str, run_dir: Path, overrides: list[str]) -> dict[str, float]:
    """One ``genkit-train`` run in ``run_dir``, timed; its final metrics (best checkpoint on val -ELBO)."""
    args = [console_script("genkit-train"), *overrides, f"hydra.run.dir={run_dir}"]
    print(f"[{name}] {' '.join(args[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(args, check=True)
    print(f"[{name}] trained in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]
