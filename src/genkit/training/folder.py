"""A run folder is owned by one run at a time, and a new run never lands on another's results.

A run holds an exclusive ``flock`` on ``<folder>/.genkit.lock`` from start to end. The kernel
releases it when the process ends in any way (SIGKILL included), so a lock file left by a dead
run is simply free again; while held, the file names the holder (PID, host, start time) for the
message another run gets. ``flock`` works on local file systems and on NFSv4 and Lustre mounts
that support it; where locking is not supported the run goes on unlocked with a warning.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import IO

from genkit.errors import RunFolderError

log = logging.getLogger(__name__)

LOCK_FILE = ".genkit.lock"
#: What a finished or interrupted run leaves that a new run in the same folder would overwrite or mix with.
RESULTS = ("metrics.json", "checkpoints/*.ckpt", "csv/metrics.csv")


#: Environment variables a launcher sets to a process's rank, in the order Lightning's ``rank_zero_only`` reads them.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def launched_rank() -> int:
    """This process's rank as its launcher set it (0 for a single process): only rank zero takes or
    probes a run folder's lock, so the processes of one DDP or multi-task SLURM run never race for it."""
    for name in RANK_VARIABLES:
        if name in os.environ:
            return int(os.environ[name])
    return 0


def holder(folder: Path) -> str | None:
    """Who holds ``folder``'s lock ("pid 123 on node7 since ..."), or None when no running process does."""
    path = folder / LOCK_FILE
    if not path.is_file():
        return None
    with open(path, "a+") as file:
        if try_lock(file):
            return None  # closing the file releases the lock at once
        return path.read_text().strip() or "another process"


def try_lock(file: IO[str]) -> bool:
    """Take an exclusive lock on ``file`` without waiting; False when another process holds it."""
    import fcntl

    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def in_use(folder: Path, by: str) -> RunFolderError:
    return RunFolderError(
        f"{folder} is in use by another genkit run ({by}); wait for it to end, or stop it first "
        "(a run that was killed holds no lock), or train into another folder"
    )


class RunLock:
    """The lock a run holds on its folder while it trains (``with RunLock(folder): ...``).

    Raises:
        RunFolderError: another running process holds the folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.file: IO[str] | None = None

    def __enter__(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        file = open(path, "a+")  # noqa: SIM115 (held open for the run: closing it releases the lock)
        try:
            locked = try_lock(file)
        except OSError as error:  # a file system without flock
            log.warning("could not lock %s (%s); nothing stops another run from using it", self.folder, error)
            file.close()
            return self
        if not locked:
            by = path.read_text().strip() or "another process"
            file.close()
            raise in_use(self.folder, by)
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        file.flush()
        self.file = file
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()


def results_in(folder: Path) -> list[str]:
    """The results of a run that ``folder`` holds (relative paths), empty when none."""
    return sorted(str(p.relative_to(folder)) for pattern in RESULTS for p in folder.glob(pattern))


def move_aside(folder: Path) -> Path:
    """Move ``folder`` to ``<folder>-replaced-<time>`` beside it; returns where it went."""
    aside = folder.with_name(f"{folder.name}-replaced-{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    folder.rename(aside)
    return aside
