"""The console scripts' quick exit: exit handlers run, streams are flushed, the code is kept."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from genkit.cli.process import console_script

out = Path(sys.argv[1])
atexit.register(lambda: out.with_suffix(".atexit").write_text("ran"))

def main():
    sys.stdout.write("unflushed output")  # no newline: still in the buffer at the end
    if sys.argv[2] == "thread":  # a library's unfinished work in a non-daemon thread
        threading.Thread(target=lambda: (time.sleep(0.5), out.with_suffix(".thread").write_text("done"))).start()
    if sys.argv[2] == "message":
        sys.exit("genkit: refused")
    return {"ok": 0, "code": 3, "thread": 0}[sys.argv[2]]

console_script(main)
"""


@pytest.mark.parametrize(("how", "code"), [("ok", 0), ("code", 3), ("message", 1), ("thread", 0)])
def test_a_console_script_ends_with_its_code_its_exit_handlers_run_and_its_output_flushed(how, code, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(script), str(out), how], capture_output=True, text=True)
    assert done.returncode == code, done.stderr
    assert done.stdout == "unflushed output"
    assert out.with_suffix(".atexit").read_text() == "ran"
    if how == "message":
        assert done.stderr.strip() == "genkit: refused"
    if how == "thread":
        assert out.with_suffix(".thread").read_text() == "done"


def test_the_console_scripts_are_the_quick_exit_wrappers():
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name.startswith("genkit")}
    assert scripts == {
        "genkit": "genkit.cli.main:script",
        "genkit-train": "genkit.cli.train:script",
        "genkit-eval": "genkit.cli.eval:script",
    }
