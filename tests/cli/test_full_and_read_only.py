"""A full disk and a read-only folder, on real small file systems: one clear line naming the path,
no stray temporary files, nothing already saved damaged, and tools that print their results first."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import run, script
from genkit.checkpoint import read_checkpoint


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``small_filesystem(size)``: a fresh tmpfs of ``size`` (e.g. ``2m``) mounted in tmp_path, unmounted
    afterwards; the test skips where this process may not mount one (it needs root or CAP_SYS_ADMIN)."""
    mounted = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small file system here ({done.stderr.decode().strip() or 'mount failed'})")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_leaves_no_debris(small_filesystem, tmp_path, cli_env):
    disk = small_filesystem("2m")  # the first epoch's best checkpoint (1.2 MB) fits, last.ckpt beside it does not
    result = run(
        [*script("genkit-train"), "trainer.max_epochs=2", "logger=csv", f"hydra.run.dir={disk}/run"], cli_env, tmp_path
    )
    assert result.returncode == 1
    assert f"genkit: cannot write {disk}/run/checkpoints/last.ckpt: no space left on the device (1.2 MB needed" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr + result.stdout
    assert not list(disk.rglob("*.tmp")), "a temporary file of the failed write was left behind"
    (saved,) = (disk / "run" / "checkpoints").glob("*.ckpt")
    read_checkpoint(saved)  # what was saved before the disk filled is whole


def test_a_read_only_run_folder_is_refused_and_tools_print_their_results_first(
    small_filesystem, trained, tmp_path, cli_env, train_refuses, genkit_command, monkeypatch
):
    disk = small_filesystem("8m")
    folder = Path(shutil.copytree(trained.folder, disk / "run", ignore=shutil.ignore_patterns("wandb", "epoch*")))
    read_only(disk)
    refused = train_refuses(f"resume={folder}")
    assert f"cannot write {folder}: the folder is read-only or not yours" in refused

    evaluated = run([*script("genkit-eval"), "ckpt=checkpoints/last.ckpt", "nll.k=2"], cli_env, folder)
    assert evaluated.returncode == 1 and "Traceback" not in evaluated.stderr
    assert "test of checkpoints/last.ckpt" in evaluated.stdout + evaluated.stderr  # the results, printed first
    assert "genkit: cannot write checkpoints/last.test.eval.json: the folder is read-only" in evaluated.stderr

    monkeypatch.chdir(folder)
    code, _, err = genkit_command("sample", "ckpt=checkpoints/last.ckpt", "n=4")
    assert code == 1 and "cannot write checkpoints/last.samples.png: the folder is read-only or not yours" in err
    code, _, err = genkit_command("sample", "ckpt=checkpoints/last.ckpt", "n=4", f"out={tmp_path / 'samples.png'}")
    assert code == 0 and (tmp_path / "samples.png").is_file()  # out= is the way out the message names
