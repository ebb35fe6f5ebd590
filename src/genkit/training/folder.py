"""A run folder is owned by one run at a time, a new run never lands on another's results, and
what is written into it is written whole or not at all (``write_atomically``).

A run holds an exclusive ``flock`` on ``<folder>/.genkit.lock`` from start to end. The kernel
releases it when the process ends in any way (SIGKILL included), so a lock file left by a dead
run is simply free again; while held, the file names the holder (PID, host, start time) for the
message another run gets. ``flock`` works on local file systems and on NFSv4 and Lustre mounts
that support it; where locking is not supported the run goes on unlocked with a warning.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import IO

from genkit.errors import RunFolderError, WriteError

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
    with open(path) as file:  # read-only: flock needs no write access, and the folder may have none
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


def write_atomically(path: Path, data: bytes | memoryview, pause: float = 0.0) -> None:
    """Write ``data`` to ``path`` whole or not at all: into a hidden temporary file in the same folder,
    flushed to disk, then renamed over ``path`` (atomic on POSIX and Windows), so a kill or a full
    disk leaves the previous file intact. ``pause``: seconds to wait halfway (a test hook).

    Raises:
        WriteError: the disk is full or the folder cannot be written; the temporary file is removed.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as file:
            if pause:
                file.write(data[: len(data) // 2])
                file.flush()
                time.sleep(pause)
                file.write(data[len(data) // 2 :])
            else:
                file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise write_error(path, error, len(data)) from None


#: ``errno`` values of a write that the disk or the folder refuses.
FULL = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_error(path: Path, error: OSError, needed: int | None = None) -> WriteError:
    """``error`` from writing (``needed`` bytes) to ``path`` as one line naming the path and the way out."""
    if error.errno in FULL:
        space = f"{megabytes(needed)} needed, " if needed else ""
        return WriteError(
            f"cannot write {path}: no space left on the device ({space}{megabytes(free_bytes(path.parent))} free); "
            "free some space (then resume= continues a run), or write elsewhere. Files already saved are intact"
        )
    if error.errno in READ_ONLY:
        return WriteError(
            f"cannot write {path}: the folder is read-only or not yours ({error.strerror}); write elsewhere "
            "(hydra.run.dir=DIR or GENKIT_LOG_DIR=DIR for runs, out=PATH for tools, or run from a writable folder)"
        )
    return WriteError(f"cannot write {path}: {error.strerror or error}")


def as_write_error(error: OSError) -> WriteError | None:
    """A disk-full or read-only ``error`` raised while writing a named file, as a WriteError (None: another error)."""
    if error.errno in FULL + READ_ONLY and error.filename:
        return write_error(Path(error.filename), error)
    return None


def check_writable(folder: Path) -> None:
    """Refuse, before anything is written, a folder that cannot be created or written into (a read-only
    file system or a folder that is not the user's): Hydra would fail inside with a traceback.

    Raises:
        WriteError: naming the folder and where to write instead.
    """
    existing = nearest_existing(folder)
    if existing.is_dir() and not os.access(existing, os.W_OK):
        raise write_error(folder, OSError(errno.EROFS, "it cannot be written"))


def free_bytes(folder: Path) -> int:
    """Free bytes on the file system holding ``folder``."""
    return shutil.disk_usage(nearest_existing(folder)).free


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest parent that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def megabytes(count: int) -> str:
    return f"{count / 2**20:.1f} MB"
