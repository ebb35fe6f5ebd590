"""The plugin guide's code runs as written: its parts pass the contract checks and train."""

from __future__ import annotations

import re
import sys

import numpy as np

from conftest import REPO, run

GUIDE = REPO / "docs" / "plugins.md"


def code_blocks(first_line: str) -> list[str]:
    """Python blocks of the guide that start with ``first_line``."""
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    return [b for b in blocks if b.startswith(first_line)]


def test_every_part_in_the_plugin_guide_passes_check_part(tmp_path, cli_env):
    (tmp_path / "my_parts.py").write_text("\n\n".join(code_blocks("# my_parts.py")))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_my_parts.py").write_text(code_blocks("# tests/test_my_parts.py")[0])
    npy = tmp_path / "npy"
    npy.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 300), ("val", 50), ("test", 50)):
        np.save(npy / f"{split}.npy", rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
    env = {**cli_env, "PYTHONPATH": str(tmp_path)}
    guide_tests = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], env, tmp_path)
    assert guide_tests.returncode == 0, guide_tests.stdout[-3000:]
    rest = f"""
from genkit.testing import check_part
check_part("prior", "learned_gaussian", plugin_modules=["my_parts"])
check_part("decoder", "tiny", plugin_modules=["my_parts"])
check_part("data", "npy_images", overrides=["data.path={npy}", "encoder=tiny", "decoder=tiny",
           "posterior=laplace", "prior=learned_gaussian", "likelihood=laplace"], plugin_modules=["my_parts"])
print("all parts ok")
"""
    checked = run([sys.executable, "-c", rest], env, tmp_path)
    assert checked.returncode == 0 and "all parts ok" in checked.stdout, checked.stderr[-3000:]
