"""Sweeps beyond the basic launcher: a real Optuna search that continues its stored study, the
SLURM launcher preset (composed only: no cluster here), and resume=auto."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run, script

TINY = ["trainer.max_epochs=2", "logger=none", "callbacks.progress_bar.refresh_rate=0"]


def test_optuna_search_stores_its_study_and_the_same_command_continues_it(tmp_path, cli_env):
    import optuna

    sweeps = []
    for attempt in range(2):
        sweep = tmp_path / f"sweep{attempt}"
        args = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *TINY, f"hydra.sweep.dir={sweep}"]
        result = run([*script("genkit-train"), *args], cli_env, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        sweeps.append(sweep)
    study = optuna.load_study(study_name="genkit", storage=f"sqlite:///{tmp_path / 'outputs' / 'optuna' / 'genkit.db'}")
    values = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(values) == 4, "the second search must add to the stored study"
    logged = [
        json.loads((job / "metrics.json").read_text())["metrics"]["val/nelbo"]
        for sweep in sweeps
        for job in sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())
    ]
    assert sorted(values) == sorted(logged) and study.best_value == min(logged)
    assert {"optim.lr", "model.latent_dim", "model.beta", "model.free_bits", "prior"} <= study.best_params.keys()


def test_slurm_launcher_preset_composes_with_its_parameters(tmp_path, cli_env):
    args = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4", "--cfg", "hydra"]
    result = run([*script("genkit-train"), *args], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    launcher = result.stdout.split("  launcher:\n", 1)[1]
    for line in ("SlurmLauncher", "partition: gpu", "gpus_per_node: 4", "max_num_timeout: 3", "signal_delay_s: 120"):
        assert line in launcher, line


def test_resume_auto_continues_the_folder_it_runs_in(tmp_path, cli_env):
    out = tmp_path / "fixed"
    args = [*TINY, "resume=auto", f"hydra.run.dir={out}"]
    first = run([*script("genkit-train"), *args], cli_env, tmp_path)
    assert first.returncode == 0 and "no checkpoint in" in first.stdout, first.stderr[-3000:]
    again = run([*script("genkit-train"), *args], cli_env, tmp_path)
    assert again.returncode == 0 and "finished with this configuration already" in again.stdout
    longer = run([*script("genkit-train"), *args, "trainer.max_epochs=3"], cli_env, tmp_path)
    assert longer.returncode == 0 and "resuming from" in longer.stdout, longer.stderr[-3000:]
    assert Path(out / "metrics.json").is_file()


def test_compare_tables_a_sweep_sorted_by_the_objective_with_the_failed_job_marked(tmp_path, cli_env, genkit_command):
    sweep = tmp_path / "sweep"
    args = ["-m", "model.latent_dim=2,8", "data.batch_size=64,0", *TINY, f"hydra.sweep.dir={sweep}"]
    swept = run([*script("genkit-train"), *args], cli_env, tmp_path)
    assert "data.batch_size must be at least 1" in swept.stdout + swept.stderr
    csv_file, markdown = tmp_path / "runs.csv", tmp_path / "runs.md"
    result = run(
        [*script("genkit"), "compare", str(sweep), f"csv={csv_file}", f"markdown={markdown}"], cli_env, tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header[:4] == ["job", "data.batch_size", "model.latent_dim", "status"] and "val/nelbo" in header
    rows = [line.split() for line in lines[1:]]
    finished = [r for r in rows if r[3] == "finished"]
    objective = header.index("val/nelbo")
    assert len(finished) == 2 and float(finished[0][objective]) <= float(finished[1][objective])
    assert all(r[1] == "64" for r in finished) and [r[1] for r in rows[2:]] == ["0", "0"]
    assert all("failed" in " ".join(r) for r in rows[2:])
    expected = {json.loads((sweep / r[0] / "metrics.json").read_text())["metrics"]["val/nelbo"] for r in finished}
    assert {round(v, 4) for v in expected} == {float(r[objective]) for r in finished}
    assert csv_file.read_text().splitlines()[0].startswith("job,data.batch_size,model.latent_dim,status")
    assert markdown.read_text().startswith("| job | data.batch_size | model.latent_dim | status |")
    code, _, err = genkit_command("compare", str(sweep), "sort=val/nope")
    assert code == 2 and "sort=val/nope: no job logged that metric" in err
    code, _, err = genkit_command("compare", str(tmp_path / "nowhere"))
    assert code == 2 and "there is no such folder" in err


def test_a_sweep_job_that_cannot_compose_stops_the_sweep_before_any_job_starts(tmp_path, train_refuses):
    sweep = tmp_path / "sweep"
    refused = train_refuses("-m", "encoder=conv,mlp", "encoder.channels=[8]", *TINY, f"hydra.sweep.dir={sweep}")
    assert "sweep job 1 of 2 (encoder=mlp encoder.channels=[8]" in refused
    assert "Key 'channels' not in 'encoder_mlp'" in refused
    assert not sweep.exists(), "job 0 (conv, which has channels) must not have run"
    refused = train_refuses("-m", "seed=0,-1", *TINY, f"hydra.sweep.dir={sweep}")
    assert "sweep job 1 of 2 (seed=-1" in refused and "seed must be a whole number from 0 to" in refused
    assert not sweep.exists(), "job 0 must not have run"
