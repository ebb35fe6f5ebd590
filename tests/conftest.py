"""Shared fixtures: the real data folder (skipped when absent) and a helper to run the console scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GENKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data(name: str) -> Path:
    """A data set from ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"needs the real {name} data in {path} (the project's shared/ folder); not present here")
    return path


def script(name: str) -> list[str]:
    """The installed console script ``name`` (next to this Python)."""
    candidate = Path(sys.executable).parent / name
    return [str(candidate)] if candidate.exists() else [name]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment of a user with no W&B key and no ~/.netrc: W&B must go offline by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path / "home")
    env["GENKIT_LOG_DIR"] = str(tmp_path / "outputs")
    (tmp_path / "home").mkdir()
    return env


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command and return it (stdout and stderr captured as text)."""
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def wandb_log_records(log: Path, env: dict[str, str]) -> list[dict]:
    """The records of one offline W&B run file (``run-*.wandb``), read by W&B's own inspector."""
    result = run(["wandb", "leet", "inspect", "--json", str(log)], env, log.parent, timeout=120)
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def wandb_records(run_dir: Path, env: dict[str, str]) -> list[dict]:
    """The records of the one offline W&B run under ``run_dir``."""
    logs = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(logs) == 1, f"expected one offline W&B run in {run_dir}, found {logs}"
    return wandb_log_records(logs[0], env)


#: Overrides that keep an end-to-end run to a few seconds.
FAST = ["trainer.max_epochs=2", "callbacks.progress_bar.refresh_rate=0"]
