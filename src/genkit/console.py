"""What reaches the console: dependencies' messages a user cannot act on are kept off it; quiet mode
(``verbose=false``, ``-q``) keeps only each command's summary, warnings and errors; long steps show
progress, as a Rich bar on a terminal and a line at most every ``PROGRESS_EVERY`` seconds in a log.

Whether genkit speaks is the level of the ``genkit`` logger, set once per command; a command's
summary goes through ``SUMMARY``, which quiet mode keeps.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

#: The final results of a command (tables, written files): shown even in quiet mode.
SUMMARY = logging.getLogger("genkit.summary")
#: Seconds between progress lines when the output is not a terminal.
PROGRESS_EVERY = 30.0
#: Loggers of dependencies whose information quiet mode drops (their warnings and errors stay).
CHATTY = ("lightning", "lightning.pytorch", "lightning.fabric", "hydra", "wandb")

log = logging.getLogger(__name__)


def be_quiet() -> None:
    """Quiet mode: only summaries, warnings and errors, from genkit and its dependencies."""
    logging.getLogger("genkit").setLevel(logging.WARNING)
    SUMMARY.setLevel(logging.INFO)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)


def verbose() -> bool:
    """False in quiet mode."""
    return logging.getLogger("genkit").isEnabledFor(logging.INFO)


def quiet_dependencies() -> None:
    """Keep off the console what dependencies print that a genkit user cannot act on, each message
    silenced narrowly, by its text and where it comes from; genkit's own warnings stay."""
    # genkit logs epoch values it has already reduced exactly over all ranks (VAE.log_epoch),
    # so Lightning's advice to add sync_dist=True does not apply.
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
    # Lightning's own use of a torch pytree API that torch deprecated: for Lightning to change.
    warnings.filterwarnings(
        "ignore", message=r".*isinstance\(treespec, LeafSpec\)", module=r"lightning\.pytorch\.utilities\._pytree"
    )
    # genkit's metrics are per epoch; the per-step logging interval only thins train/loss_step, which
    # an epoch shorter than the interval need not have.
    warnings.filterwarnings(
        "ignore",
        message=r"The number of training batches .* is smaller than the logging interval",
        module=r"lightning\.pytorch\.loops\.fit_loop",
    )
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(drop_advertisements)


def drop_advertisements(record: logging.LogRecord) -> bool:
    """Lightning's tips to install its cloud logger and model registry."""
    return not str(record.msg).startswith("💡 Tip:")


def on_terminal() -> bool:
    return sys.stderr.isatty()


def progress(items: Iterable[T], total: int, what: str) -> Iterator[T]:
    """``items``, with progress shown as they are consumed: a Rich bar on a terminal, a line with
    the time left at most every ``PROGRESS_EVERY`` seconds in a log, nothing in quiet mode."""
    if not verbose():
        yield from items
        return
    if on_terminal():
        from rich.console import Console
        from rich.progress import track

        yield from track(items, description=what, total=total, console=Console(stderr=True), transient=True)
        return
    start = shown = time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - shown >= PROGRESS_EVERY and done < total:
            elapsed = now - start
            log.info(
                "%s: %d/%d, %.0f s, about %.0f s left", what, done, total, elapsed, elapsed / done * (total - done)
            )
            shown = now


class Progress:
    """Progress of work that worker processes count in a shared counter (``done.value``), shown from
    a thread: a Rich bar with the time left on a terminal, a line every ``PROGRESS_EVERY`` seconds in
    a log, nothing in quiet mode."""

    def __init__(self, done: Any, total: int, action: str) -> None:
        self.done, self.total, self.action = done, total, action
        self.finished = threading.Event()

    def __enter__(self) -> Progress:
        self.thread = threading.Thread(target=self.show, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finished.set()
        self.thread.join()

    def show(self) -> None:
        if not verbose():
            return
        if on_terminal():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Bar(*columns, console=Console(stderr=True)) as bar:
                task = bar.add_task(self.action, total=self.total)
                while not self.finished.wait(0.5):
                    bar.update(task, completed=self.done.value)
                bar.update(task, completed=self.done.value)
            return
        start = time.monotonic()
        while not self.finished.wait(PROGRESS_EVERY):
            done, elapsed = self.done.value, time.monotonic() - start
            left = f", about {elapsed / done * (self.total - done):.0f} s left" if done else ""
            log.info("%s: %d of %d items, %.0f s%s", self.action, done, self.total, elapsed, left)


@contextmanager
def status(what: str) -> Iterator[None]:
    """A step without steps to count (t-SNE): a Rich spinner on a terminal, a line before and after in a log."""
    if not verbose():
        yield
        return
    if on_terminal():
        from rich.console import Console

        with Console(stderr=True).status(what):
            yield
        return
    start = time.monotonic()
    log.info("%s ...", what)
    yield
    log.info("%s: done in %.0f s", what, time.monotonic() - start)
