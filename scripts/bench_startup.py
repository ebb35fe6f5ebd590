"""How long genkit's commands take to answer, beside importing torch and Lightning on the same machine.

Each command runs as a fresh process, interleaved round by round (machine speed drifts), and the
medians are printed with each command's lag behind ``import torch`` and ``import lightning``:

- ``genkit --help`` and ``genkit list`` (targets: within 1 s of importing torch);
- ``genkit-train --help``;
- ``genkit-train`` on the embedded digits, one epoch, W&B offline: the time to its first training
  step (target: within 2 s of importing Lightning) and from its last step to the process's exit
  (target: within 1 s), read from a callback that records both moments.

    python scripts/bench_startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import console_script, offline_env

#: A callback recording when the first training step starts and the last one ends (perf_counter is
#: not comparable across processes; time.time is, to well under a millisecond here).
STEP_TIMES = """
import time
from pathlib import Path
from lightning.pytorch import Callback

class StepTimes(Callback):
    def __init__(self, out):
        self.out = Path(out)
        self.first = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first is None:
            self.first = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.out.write_text(f"{self.first} {time.time()}")
"""


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds the process took, and the moment (``time.time``) it started."""
    started = time.time()
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs of each command (medians reported)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="genkit-startup-"))
    (work / "step_times.py").write_text(STEP_TIMES)
    env = offline_env(work)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH")]))  # the callback
    commands = {
        "import torch": [sys.executable, "-c", "import torch"],
        "import lightning": [sys.executable, "-c", "import lightning"],
        "genkit --help": [console_script("genkit"), "--help"],
        "genkit list": [console_script("genkit"), "list"],
        "genkit-train --help": [console_script("genkit-train"), "--help"],
    }
    times: dict[str, list[float]] = {
        name: [] for name in [*commands, "genkit-train 1 epoch", "to first step", "after last step"]
    }
    for round_ in range(args.rounds):
        for name, command in commands.items():
            times[name].append(timed(command, env)[0])
        marks = work / f"steps-{round_}.txt"
        train = [
            console_script("genkit-train"),
            "trainer.max_epochs=1",
            "+callbacks.step_times._target_=step_times.StepTimes",
            f"+callbacks.step_times.out={marks}",
            f"hydra.run.dir={work / f'run-{round_}'}",
        ]
        seconds, started = timed(train, env)
        first, last = map(float, marks.read_text().split())
        times["genkit-train 1 epoch"].append(seconds)
        times["to first step"].append(first - started)
        times["after last step"].append(started + seconds - last)
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    torch_s, lightning_s = median["import torch"], median["import lightning"]
    print(f"\nmedians of {args.rounds} runs (seconds; lag = command - import)")
    print(f"{'':<22}{'seconds':>9}{'vs torch':>10}{'vs lightning':>14}")
    for name, value in median.items():
        versus = f"{value - torch_s:+10.2f}{value - lightning_s:+14.2f}" if name != "after last step" else ""
        print(f"{name:<22}{value:9.2f}{versus}")


if __name__ == "__main__":
    main()
