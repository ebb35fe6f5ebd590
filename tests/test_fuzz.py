"""scripts/fuzz_config.py at a small size: generated input across genkit-train (parts, data modules,
run options, plugins broken only at the real batch size), every genkit tool and genkit-eval ends in
a result or one clear message naming what was given. The README reports the full-size run."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def test_generated_input_across_the_command_surface_is_never_raw_or_misleading(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fuzz_config.py"), "--examples", "40", "--seed", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp_path), "HOME": str(tmp_path)},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tried 40 cases, none raw or misleading" in done.stdout
