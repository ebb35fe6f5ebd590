"""How genkit's console scripts end: at once, when their work and every exit handler are done.

After a run, Python's own teardown (freeing every module Lightning pulls in: torchmetrics,
torchvision, scipy, torch._dynamo) takes over a second on its own (``python -c "import lightning"``
spends 1.3 s of its 5 s exiting on the development machine); each sweep job and tool call paid it.
The console scripts skip it as mypy does: they run the exit handlers (loggers, W&B, temporary
files, worker processes), flush the streams and end the process. ``main()`` called from Python
returns normally.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn


def console_script(main: Callable[[], int | None]) -> NoReturn:
    """Run ``main`` and end the process with its exit code (``SystemExit`` included)."""
    try:
        code = main()
    except SystemExit as stop:
        code = stop.code
    if isinstance(code, str):  # as Python reports sys.exit("message")
        sys.stderr.write(f"{code}\n")
        code = 1
    leave(code or 0)


def leave(code: int) -> NoReturn:
    """End the process now: run the exit handlers, flush the streams, exit. While a non-daemon
    thread still runs (a library's work not finished), Python's own exit does it as usual."""
    current = threading.current_thread()
    if any(t is not current and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to say
            pass
    os._exit(code)
