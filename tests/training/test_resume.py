"""Crash and resume, for real: SIGKILL mid-training, kills inside a checkpoint write, corrupt
files, changed configs and interrupted sweeps."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from conftest import (
    assert_same_final_state,
    final_state,
    interrupter,
    kill,
    run,
    saved_epoch,
    script,
    shared_run,
    start,
    wait_for,
)
from genkit.checkpoint import read_checkpoint
from genkit.training.resume import frozen_changes
from genkit.training.run import TRAINING_END, WRITE_DELAY_ENV

#: Long enough that a kill lands mid-run, short enough for the suite; a learning-rate schedule
#: whose state must come back too.
EPOCHS = 12
GAMMA = 0.8
RUN = [
    f"trainer.max_epochs={EPOCHS}",
    "callbacks.progress_bar.refresh_rate=0",
    "scheduler=exponential",
    f"scheduler.gamma={GAMMA}",
]


def wandb_run_ids(run_dir: Path) -> list[str]:
    return [p.name.rsplit("-", 1)[1] for p in sorted((run_dir / "wandb").glob("offline-run-*"))]


@pytest.fixture(scope="session")
def straight(tmp_path_factory, worker_id) -> Path:
    """The reference: the same run, never interrupted (trained once for the session)."""
    return shared_run("straight", RUN, tmp_path_factory, worker_id).folder


def assert_same_end(resumed: Path, straight: Path) -> None:
    assert_same_final_state(resumed, straight)
    assert final_state(resumed)[1]["train/lr"] == pytest.approx(
        1e-3 * GAMMA ** (EPOCHS - 1), rel=1e-5
    )  # the last epoch's rate


def test_sigkill_then_resume_ends_exactly_as_an_uninterrupted_run(straight, tmp_path, cli_env):
    killed = tmp_path / "killed"
    process = start([*RUN, f"hydra.run.dir={killed}"], cli_env, tmp_path)
    wait_for(lambda: saved_epoch(killed / "checkpoints" / "last.ckpt") >= 3, process)
    kill(process)
    assert not (killed / "metrics.json").exists(), "the kill must land before the run finished"
    resumed = run([*script("genkit-train"), f"resume={killed}"], cli_env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr + resumed.stdout
    assert_same_end(killed, straight)
    ids = wandb_run_ids(killed)
    assert len(ids) == 2 and ids[0] == ids[1], f"the resumed run must continue the same W&B run: {ids}"
    assert (killed / "csv" / "metrics.csv").is_file() and (killed / "csv" / "resume-1" / "metrics.csv").is_file()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_save_mid_epoch_and_resume_exactly(signum, straight, tmp_path, cli_env):
    stopped = tmp_path / "stopped"
    process = start([*RUN, f"hydra.run.dir={stopped}"], cli_env, tmp_path)
    last = stopped / "checkpoints" / "last.ckpt"
    wait_for(lambda: saved_epoch(last) >= 2, process)
    os.kill(process.pid, signum)
    log = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGTERM, log[-3000:]
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    # The signal lands in a training step (a save there, mid-epoch), or in an epoch's last step
    # or its one-batch validation, which Lightning finishes first (a save at the epoch's end);
    # test_sigterm_in_a_validation_... covers a multi-batch validation.
    assert f"interrupted by {name} at step" in log, log[-3000:]
    progress = torch.load(last, map_location="cpu", weights_only=True)["loops"]["fit_loop"]
    assert 0 < progress["epoch_loop.batch_progress"]["current"]["completed"] <= 10, "a save where it stopped"
    resumed = run([*script("genkit-train"), f"resume={stopped}"], cli_env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_end(stopped, straight)


#: 10 training steps an epoch, 6 validation batches, 12 test batches.
EVALUATING = ["trainer.max_epochs=4", "data.eval_batch_size=30", "callbacks.progress_bar.refresh_rate=0", "logger=csv"]


@pytest.mark.parametrize(
    ("stage", "batch", "groups", "stopped_at", "saved_epoch_", "completed"),
    [
        ("validation", 2, 1, "in validation batch 3 of 6 (step 30)", 2, 10),  # rerun from its start on resuming
        ("validation", 5, 1, "at step 30", 3, 10),  # the last batch: the epoch ends (its media skipped), a save there
        ("test", 2, 1, "in batch 3 of 12 of the final test", 3, 10),  # training complete: evaluated again on resuming
        ("training", 1, 3, "at step 26", 2, 2),  # after the second group of three batches of epoch 2 (steps 20-25)
    ],
)
def test_sigterm_in_a_batch_stops_after_that_batch_and_resume_ends_as_never_stopped(
    stage, batch, groups, stopped_at, saved_epoch_, completed, tmp_path_factory, worker_id, tmp_path, cli_env
):
    """SIGTERM arrives in a given batch of epoch 2's training or validation or of the final test: the run
    stops after that very batch (the message says which), and resuming ends exactly as a run never
    stopped, one that ran single batches too when this one ran groups of them."""
    straight = shared_run("straight-evaluating", EVALUATING, tmp_path_factory, worker_id).folder
    env, signal_at = interrupter(tmp_path, cli_env, stage, 2, batch)
    stopped = tmp_path / "stopped"
    interrupted = run(
        [
            *script("genkit-train"),
            *EVALUATING,
            *signal_at,
            f"trainer.steps_per_execution={groups}",
            f"hydra.run.dir={stopped}",
        ],
        env,
        tmp_path,
    )
    log = interrupted.stdout + interrupted.stderr
    assert interrupted.returncode == 128 + signal.SIGTERM, log[-3000:]
    assert f"interrupted by SIGTERM {stopped_at}" in log, log[-3000:]
    assert not (stopped / "metrics.json").exists()
    last = stopped / "checkpoints" / "last.ckpt"
    loops = torch.load(last, map_location="cpu", weights_only=True)["loops"]
    assert saved_epoch(last) == saved_epoch_
    assert loops["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] == completed
    if groups > 1:  # Lightning's position counts groups of three: other groups cannot continue from it
        files = sorted(stopped.rglob("*"))
        refused = run([*script("genkit-train"), f"resume={stopped}", "trainer.steps_per_execution=2"], env, tmp_path)
        assert refused.returncode == 2 and "resume with trainer.steps_per_execution=3" in refused.stderr
        assert sorted(stopped.rglob("*")) == files, "refused before anything was written"
    resumed = run([*script("genkit-train"), f"resume={stopped}"], env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_final_state(stopped, straight)


def test_a_kill_during_the_final_evaluation_resumes_to_the_same_results(straight, tmp_path, cli_env):
    """A kill anywhere after training (the final validation or test) leaves a run folder whose only
    missing file is metrics.json; resuming reports the same numbers, the training row included."""
    killed = Path(shutil.copytree(straight, tmp_path / "killed"))
    (killed / "metrics.json").unlink()
    resumed = run([*script("genkit-train"), f"resume={killed}"], cli_env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_end(killed, straight)


def test_sigterm_in_the_final_evaluation_stops_within_a_step_and_resume_finishes_it(tmp_path, cli_env):
    stopped = tmp_path / "stopped"
    args = ["trainer.max_epochs=1", "data.eval_batch_size=1", "logger=csv", f"hydra.run.dir={stopped}"]
    process = start(args, cli_env, tmp_path)  # 360 test and 180 validation batches of one example
    wait_for(lambda: (stopped / TRAINING_END).is_file(), process)
    os.kill(process.pid, signal.SIGTERM)
    log = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGTERM, log[-3000:]
    assert "training is complete and saved; genkit-train resume=" in log, log[-3000:]
    assert not (stopped / "metrics.json").exists()
    resumed = run([*script("genkit-train"), f"resume={stopped}"], cli_env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((stopped / "metrics.json").read_text())["metrics"]
    assert {"train/nelbo", "val/nelbo", "test/nelbo"} <= metrics.keys()


def test_a_kill_inside_a_checkpoint_write_leaves_the_last_checkpoint_whole(tmp_path, cli_env):
    out = tmp_path / "run"
    env = {**cli_env, WRITE_DELAY_ENV: "2"}
    process = start([*RUN, "logger=none", f"hydra.run.dir={out}"], env, tmp_path)
    folder = out / "checkpoints"
    # wait for the third write to be under way: earlier ones exist, a temporary file is half written
    wait_for(lambda: saved_epoch(folder / "last.ckpt") >= 1 and any(folder.glob(".*.tmp")), process)
    kill(process)
    assert any(folder.glob(".*.tmp")), "the kill must land inside a write"
    read_checkpoint(folder / "last.ckpt")  # complete and readable
    resumed = run([*script("genkit-train"), f"resume={out}", "trainer.max_epochs=4"], cli_env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not any(folder.glob(".*.tmp")) and (out / "metrics.json").is_file()


def finished_run(tmp_path: Path, env: dict[str, str], epochs: int = 2) -> Path:
    out = tmp_path / "run"
    done = run(
        [*script("genkit-train"), f"trainer.max_epochs={epochs}", "logger=none", f"hydra.run.dir={out}"], env, tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_good_one(tmp_path, cli_env):
    out = finished_run(tmp_path, cli_env)
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    resumed = run([*script("genkit-train"), f"resume={out}", "trainer.max_epochs=3"], cli_env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stderr + resumed.stdout
    assert f"checkpoint {last} cannot be read" in log and "trying the previous one" in log
    assert "resuming from" in log and "epoch001.ckpt" in log
    assert saved_epoch(last) == 2


def test_resume_refuses_model_changes_and_allows_safe_ones(tmp_path, cli_env, train_refuses):
    out = finished_run(tmp_path, cli_env)
    before = (out / "metrics.json").read_text()
    refused = train_refuses(f"resume={out}", "model.latent_dim=8", "encoder=conv")
    assert "cannot resume" in refused and "model.latent_dim: 16 -> 8" in refused
    changed = "encoder._target_: 'genkit.parts.encoders.MLPEncoder' -> 'genkit.parts.encoders.ConvEncoder'"
    assert changed in refused
    assert (out / "metrics.json").read_text() == before, "a refused resume must not touch the run"
    unchanged = run([*script("genkit-train"), f"resume={out}"], cli_env, tmp_path)
    assert unchanged.returncode == 0 and "finished with this configuration already" in unchanged.stdout
    longer = run([*script("genkit-train"), f"resume={out}", "trainer.max_epochs=3", "logger=csv"], cli_env, tmp_path)
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert saved_epoch(out / "checkpoints" / "last.ckpt") == 2
    assert "there is no such folder" in train_refuses(f"resume={tmp_path / 'nowhere'}")


def test_an_interrupted_sweep_finishes_without_rerunning_completed_jobs(tmp_path, cli_env):
    sweep = tmp_path / "sweep"
    args = ["-m", "prior=normal,mog", f"trainer.max_epochs={EPOCHS}", "logger=none", f"hydra.sweep.dir={sweep}"]
    process = start(args, cli_env, tmp_path)
    wait_for(lambda: saved_epoch(sweep / "1" / "checkpoints" / "last.ckpt") >= 2, process)
    kill(process)
    first = (sweep / "0" / "metrics.json").stat().st_mtime_ns
    assert not (sweep / "1" / "metrics.json").exists()
    again = run([*script("genkit-train"), *args[:-1], f"resume={sweep}"], cli_env, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == first, "a completed job must not run again"
    log = again.stdout + again.stderr
    assert "finished with this configuration already" in log
    assert "resuming from" in log and (sweep / "1" / "metrics.json").is_file()


def test_where_and_how_fast_data_is_decoded_is_no_change():
    stored = {"data": {"path": "faces", "cache_dir": "~/.cache/genkit/data", "workers": 0}, "seed": 0}
    current = {"data": {"path": "faces", "cache_dir": "/scratch/cache", "workers": 8}, "seed": 0}
    assert frozen_changes(stored, current) == []
    current["data"]["path"] = "cars"
    assert frozen_changes(stored, current) == ["data.path: 'faces' -> 'cars'"]


def test_an_option_added_since_a_run_was_stored_is_no_change_at_its_default():
    stored = {"data": {"_target_": "genkit.data.images.Digits", "batch_size": 128}}
    current = {"data": {**stored["data"], "crop": 0, "flip": False, "exclude_labels": []}}
    assert frozen_changes(stored, current) == []
    current["data"]["crop"] = 2
    assert frozen_changes(stored, current) == ["data.crop: '(unset)' -> 2"]
