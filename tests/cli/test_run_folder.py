"""A run folder is owned: a second run or resume on a folder a running genkit-train holds stops at once
naming the holder, and a new run never lands on another run's results (overwrite=true moves them aside)."""

from __future__ import annotations

import socket

import pytest

from conftest import kill, run, script, start, wait_for
from genkit.cli.app import CommandLine
from genkit.cli.train import check_run_folder
from genkit.errors import RunFolderError
from genkit.training.folder import LOCK_FILE, RunLock, holder


def test_a_new_run_in_a_finished_runs_folder_is_refused_and_overwrite_moves_it_aside(
    trained, tmp_path, cli_env, train_refuses
):
    folder = trained.copy(tmp_path / "run")
    before = (folder / "metrics.json").read_bytes()
    words = ["trainer.max_epochs=1", "logger=none", f"hydra.run.dir={folder}"]
    refusal = train_refuses(*words)  # refused before Hydra starts: exit code 2, one line
    assert f"{folder} already holds a run (run/checkpoints/" in refusal and "run/metrics.json" in refusal
    assert f"resume={folder}" in refusal and "overwrite=true" in refusal
    assert (folder / "metrics.json").read_bytes() == before  # nothing touched, Hydra's files included

    result = run([*script("genkit-train"), *words, "overwrite=true"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (aside,) = tmp_path.glob("run-replaced-*")
    assert f"moved what was in {folder} to {aside}" in result.stderr
    assert (aside / "metrics.json").read_bytes() == before and (aside / "checkpoints" / "last.ckpt").is_file()
    assert (folder / "metrics.json").read_bytes() != before  # the new run's own results


def test_a_folder_held_by_a_running_run_refuses_a_second_run_and_a_resume(tmp_path, cli_env, train_refuses):
    folder = tmp_path / "run"
    first = start(["trainer.max_epochs=500", "logger=none", f"hydra.run.dir={folder}"], cli_env, tmp_path)
    try:
        wait_for(lambda: holder(folder) is not None, first)
        assert holder(folder).startswith(f"pid {first.pid} on {socket.gethostname()} since ")
        config = (folder / ".hydra" / "config.yaml").read_bytes()
        for extra in (["trainer.max_epochs=1"], [f"resume={folder}"]):
            refusal = train_refuses("logger=none", f"hydra.run.dir={folder}", *extra)
            assert f"{folder} is in use by another genkit run (pid {first.pid} on {socket.gethostname()}" in refusal
        assert (folder / ".hydra" / "config.yaml").read_bytes() == config  # the holder's files untouched
    finally:
        kill(first)  # SIGKILL: no chance to clean up
    assert holder(folder) is None  # the kernel released the lock; the file left behind holds nothing
    assert (folder / LOCK_FILE).is_file()


def test_a_released_lock_is_free_and_a_held_lock_names_its_holder(tmp_path):
    with RunLock(tmp_path):
        assert holder(tmp_path).startswith("pid ")
    assert holder(tmp_path) is None


def test_only_the_process_of_rank_zero_checks_the_folder(trained, monkeypatch):
    """The other processes of one run (DDP ranks, SLURM tasks) start with the folder their rank zero owns."""
    command_line = CommandLine.parse(["genkit-train", f"hydra.run.dir={trained.folder}"])
    with pytest.raises(RunFolderError, match="already holds a run"):
        check_run_folder(command_line)
    for variable in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        with monkeypatch.context() as patched:
            patched.setenv(variable, "1")
            check_run_folder(command_line)
