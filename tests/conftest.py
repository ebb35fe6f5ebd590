"""What the tests share: the real data sets (skipped when absent), running the installed console
scripts, reading W&B's offline records, and a composed-like config of registered parts."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from genkit import DataSpec

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GENKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


#: Test files of end-to-end runs in subprocesses: collected first, so that xdist starts the long ones
#: early and the many quick unit tests fill the workers' time at the end instead of one waiting on a tail.
END_TO_END = ("cli/", "training/test_resume.py", "training/test_ddp.py", "plugins/", "test_modalities.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def unit(item: pytest.Item) -> bool:
        path = Path(str(item.fspath)).relative_to(Path(__file__).parent).as_posix()
        return not path.startswith(END_TO_END)

    items.sort(key=unit)


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


def on_terminal(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run a command on a pseudo-terminal, as in a user's shell; what it drew there (it must succeed)."""
    import pty

    terminal, child_end = pty.openpty()
    process = subprocess.Popen(args, stdin=child_end, stdout=child_end, stderr=child_end, env=env, cwd=cwd)
    os.close(child_end)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        shown += chunk
    text = shown.decode(errors="replace")
    assert process.wait(timeout=300) == 0, text[-3000:]
    return text


def wandb_log_records(log: Path, env: dict[str, str]) -> list[dict]:
    """The records of one offline W&B run file (``run-*.wandb``), read by W&B's own inspector."""
    result = run(["wandb", "leet", "inspect", "--json", str(log)], env, log.parent, timeout=120)
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def wandb_records(run_dir: Path, env: dict[str, str]) -> list[dict]:
    """The records of the one offline W&B run under ``run_dir``."""
    logs = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(logs) == 1, f"expected one offline W&B run in {run_dir}, found {logs}"
    return wandb_log_records(logs[0], env)


@pytest.fixture
def train_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Callable:
    """``train_refuses(*args)``: genkit-train's entry point run in this process on a command it must
    refuse before Hydra starts (exit code 2); returns what it wrote to stderr. The refusal is the
    same code as in a fresh process, without a process's start-up; the runs in tmp_path/outputs."""
    from genkit.cli.train import main

    def refuse(*args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["genkit-train", *args])
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("GENKIT_LOG_DIR", str(tmp_path / "outputs"))
        with pytest.raises(SystemExit) as stopped:
            main()
        assert stopped.value.code == 2
        return capsys.readouterr().err

    return refuse


@pytest.fixture
def genkit_command(capsys: pytest.CaptureFixture) -> Callable:
    """``genkit_command(*argv)``: the ``genkit`` command run in this process; (exit code, stdout, stderr)."""
    from genkit.cli.main import main

    def command(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return command


def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """genkit-train in its own process group, so a kill takes W&B's helper processes too (log in stdout)."""
    return subprocess.Popen(
        [*script("genkit-train"), *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(condition, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training ended before the kill: {process.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail("training did not reach the kill point in time")
        time.sleep(0.02)


def kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def saved_epoch(path: Path) -> int:
    """The epoch a complete checkpoint file was written at (-1 while there is none)."""
    if not path.is_file():
        return -1
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]


def final_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return checkpoint["state_dict"], json.loads((run_dir / "metrics.json").read_text())["metrics"]


def assert_same_final_state(run_dir: Path, reference: Path) -> None:
    """The run in ``run_dir`` ended with the weights and metrics of the one in ``reference``, bit for bit."""
    weights, metrics = final_state(run_dir)
    expected_weights, expected_metrics = final_state(reference)
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[k], expected_weights[k]) for k in expected_weights), "weights differ"
    assert metrics == expected_metrics


#: Overrides that keep an end-to-end run to a few seconds.
FAST = ["trainer.max_epochs=2", "callbacks.progress_bar.refresh_rate=0"]


@dataclass(frozen=True)
class TrainedRun:
    """A finished ``genkit-train`` run: its folder, the environment it ran in, and what it printed."""

    folder: Path
    env: dict[str, str]
    log: str

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoints" / "last.ckpt"

    def copy(self, destination: Path) -> Path:
        """A copy of the run folder, for a test that writes into it or continues it."""
        return Path(shutil.copytree(self.folder, destination))


def shared_run(name: str, overrides: list[str], factory: pytest.TempPathFactory, worker_id: str) -> TrainedRun:
    """``genkit-train overrides`` run once per test session, in a folder every xdist worker sees: the
    first worker to need it trains, the others wait for it (a user's environment: no W&B key)."""
    from filelock import FileLock

    shared = factory.getbasetemp() if worker_id == "master" else factory.getbasetemp().parent
    root = shared / name
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(root / "home"), GENKIT_LOG_DIR=str(root / "outputs"))
    with FileLock(str(shared / f"{name}.lock")):
        log = root / "train.log"
        if not log.is_file():
            (root / "home").mkdir(parents=True)
            result = run([*script("genkit-train"), *overrides, f"hydra.run.dir={root / 'run'}"], env, root)
            assert result.returncode == 0, result.stderr[-3000:]
            log.write_text(result.stdout + result.stderr)
    return TrainedRun(root / "run", env, log.read_text())


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> TrainedRun:
    """The README's default run (digits, W&B offline without a key) with ``FAST``, shared by the
    session. Tests read it; a test that writes into it works on ``TrainedRun.copy``."""
    return shared_run("trained", FAST, tmp_path_factory, worker_id)


#: The digits' shape, for tests that build models without data.
IMAGE_SPEC = DataSpec("image", (1, 8, 8), "unit_interval")


def parts_config(**overrides: dict) -> DictConfig:
    """A composed-like config of registered parts (no Hydra needed): MLPs of 32 units, latent 3."""
    from genkit.registry import registry

    def node(kind: str, name: str, **params: object) -> dict:
        return {"_target_": registry(kind).get(name).target, **params}

    cfg = {
        "seed": 0,
        "encoder": node("encoder", "mlp", hidden=[32]),
        "posterior": node("posterior", "gaussian"),
        "prior": node("prior", "normal"),
        "decoder": node("decoder", "mlp", hidden=[32]),
        "likelihood": node("likelihood", "bernoulli"),
        "model": {"latent_dim": 3},
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and "_target_" not in value else value
    return OmegaConf.create(cfg)


SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "a small bird", "the teacher"]
VERBS = ["sees", "likes", "chases", "finds", "helps", "watches"]
OBJECTS = ["the ball", "a tree", "the house", "some food", "the river", "a book"]
ENDINGS = ["", "today", "again", "slowly", "in the morning"]


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` made-up sentences of a small grammar (a subject, a verb, an object, maybe an ending)."""
    rng = random.Random(seed)
    return [
        " ".join(filter(None, [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(ENDINGS)]))
        for _ in range(n)
    ]


def corpus_folder(tmp_path: Path, n: int = 300) -> Path:
    """A corpus folder in PTB's layout: ``toy.train.txt`` (n sentences), ``toy.valid.txt``, ``toy.test.txt``."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, count, seed in (("train", n, 0), ("valid", n // 5, 1), ("test", n // 5, 2)):
        (folder / f"toy.{name}.txt").write_text("\n".join(sentences(count, seed)) + "\n")
    return folder


#: Sample rate of the generated recordings.
RATE = 8000


def tone(frequency: float, seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def digits_folder(tmp_path: Path, speakers: tuple[str, ...] = ("ann", "bob"), takes: int = 6) -> Path:
    """FSDD-like recordings ``{digit}_{speaker}_{take}.wav``: a digit is a pitch, a speaker a loudness."""
    import soundfile

    folder = tmp_path / "recordings"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for digit in range(4):
        for s, speaker in enumerate(speakers):
            for take in range(takes):
                seconds = 0.2 + 0.05 * take
                noise = 0.01 * rng.standard_normal(round(seconds * RATE))
                wave = tone(300 + 200 * digit, seconds) * (0.5 + 0.5 * s) + noise
                soundfile.write(folder / f"{digit}_{speaker}_{take}.wav", wave.astype(np.float32), RATE)
    return folder


#: A callback that sends its own process SIGTERM, once, in one training or validation batch (of an
#: epoch) or test batch.
SIGNAL_AT = """
import os, signal
from pathlib import Path
from lightning.pytorch import Callback

class SignalAt(Callback):
    def __init__(self, stage, epoch, batch):
        self.stage, self.epoch, self.batch = stage, epoch, batch

    def signal(self, trainer, stage, batch_idx):
        here = (stage, batch_idx) == (self.stage, self.batch) and not trainer.sanity_checking
        signalled = Path("signalled")  # once: not again in the resumed run
        if here and (stage == "test" or trainer.current_epoch == self.epoch) and not signalled.exists():
            signalled.touch()
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.signal(trainer, "training", batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.signal(trainer, "validation", batch_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.signal(trainer, "test", batch_idx)
"""


def interrupter(
    tmp_path: Path, env: dict[str, str], stage: str, epoch: int, batch: int
) -> tuple[dict[str, str], list[str]]:
    """The environment and ``genkit-train`` overrides of a run that sends itself SIGTERM once, in batch
    ``batch`` of ``stage`` (training, validation: of epoch ``epoch``; test)."""
    (tmp_path / "interrupter.py").write_text(SIGNAL_AT)
    where = {"stage": stage, "epoch": epoch, "batch": batch}
    overrides = ["+callbacks.interrupter._target_=interrupter.SignalAt"]
    return {**env, "PYTHONPATH": str(tmp_path)}, overrides + [
        f"+callbacks.interrupter.{k}={v}" for k, v in where.items()
    ]
