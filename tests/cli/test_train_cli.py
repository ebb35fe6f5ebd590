"""End-to-end: the installed console scripts in subprocesses, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import genkit
from conftest import FAST, on_terminal, run, script, shared_data, wandb_records
from genkit.data.images import Digits


def test_a_log_gets_one_line_per_epoch_and_a_terminal_a_progress_bar(trained, tmp_path, cli_env):
    epochs = [line for line in trained.log.splitlines() if "genkit.training.callbacks" in line and " epoch " in line]
    assert len(epochs) == 2 and "epoch 2/2 step 20, train -ELBO" in epochs[1] and "val -ELBO" in epochs[1]
    assert "it/s" not in trained.log and "━" not in trained.log  # nothing per redraw in a file

    args = [*script("genkit-train"), "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"]
    shown = on_terminal(args, cli_env, tmp_path)
    assert "━" in shown  # Rich's bar, drawn on the terminal


def test_quiet_keeps_only_the_summary_warnings_and_errors(tmp_path, cli_env):
    out = tmp_path / "run"
    result = run([*script("genkit-train"), "-q", *FAST, f"hydra.run.dir={out}"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    for chatter in ("genkit run in", "epoch 1/2", "GPU available", "wandb:", "W&B: no API key", "Restoring states"):
        assert chatter not in console
    assert "final metrics" in console and "best checkpoint" in console and len(console.splitlines()) == 7
    assert list(out.glob("wandb/offline-run-*/run-*.wandb"))  # quiet, not off: the run is logged as always

    result = run(
        [*script("genkit-eval"), "-q", f"ckpt={out / 'checkpoints' / 'last.ckpt'}", "nll.k=2"], cli_env, tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 4 and "NLL (k=2)" in lines[1] and "written to" in lines[3]


def test_default_run_trains_summarises_checkpoints_and_logs_offline(trained):
    out, log = trained.folder, trained.log
    assert "final metrics" in log and "-ELBO" in log and "no API key found, logging offline" in log
    for noise in ("anonymous setting", "LeafSpec", "smaller than the logging interval", "Tip: For seamless"):
        assert noise not in log, f"a dependency's message the user cannot act on reached the console: {noise}"
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    for split in ("train", "val", "test"):
        for name in ("nelbo", "rec", "kl", "bpd"):
            assert f"{split}/{name}" in metrics
    assert metrics["test/nelbo"] == pytest.approx(metrics["test/rec"] + metrics["test/kl"], rel=1e-4)
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "csv" / "metrics.csv").is_file()
    assert (out / "reconstructions.png").is_file() and (out / "samples.png").is_file()

    records = wandb_records(out, trained.env)
    config = next(r for r in records if r["type"] == "run")["run"]["config"]["update"]
    assert config["encoder"]["_target_"] == "genkit.parts.encoders.MLPEncoder" and config["data"]["batch_size"] == 128
    logged = {k for r in records if r["type"] == "history" for k in r["history"]["item"]}
    assert {"val/nelbo", "val/kl", "train/nelbo", "val/reconstructions._type", "val/samples._type"} <= logged
    # The run table's val/nelbo is the best epoch's (the checkpoint's) beside the last; epoch is the last reached.
    history = [
        r["history"]["item"]["val/nelbo"] for r in records if "val/nelbo" in r.get("history", {}).get("item", {})
    ]
    summary = [
        r["summary"]["update"] for r in records if r["type"] == "summary" and "val/nelbo" in r["summary"]["update"]
    ]
    assert summary[-1]["val/nelbo"]["min"] == pytest.approx(min(history)) and "last" in summary[-1]["val/nelbo"]
    assert summary[-1]["epoch"] == {"max": 2}

    # The checkpoint alone rebuilds the model, and it scores the test set as training reported.
    model = genkit.load(json.loads((out / "metrics.json").read_text())["best_checkpoint"])
    data = Digits()
    data.setup()
    torch.manual_seed(0)
    nelbo = model.elbo_terms(data.splits["test"]["x"]).nelbo.mean().item()
    assert nelbo == pytest.approx(metrics["test/nelbo"], rel=0.03)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["encoder=convv"], "no encoder named 'convv'. Did you mean 'conv' or 'conv4' or 'conv1d'?"),
        (["-m", "prior=normal,vampp"], "no prior named 'vampp'. Did you mean 'vamp'?"),
        (["encoder.latent_dim=3"], "encoder.latent_dim is wired by genkit; remove it and set model.latent_dim"),
        (["logger=csv", "logger.wandb.log_model=best"], "logger.wandb.log_model needs logger=wandb"),
    ],
)
def test_bad_names_fail_before_training(args, message, train_refuses, tmp_path):
    assert message in train_refuses(*args)
    assert not (tmp_path / "outputs").exists()


def test_a_refused_command_line_is_one_line_from_the_console_script_without_traceback(tmp_path, cli_env):
    result = run([*script("genkit-train"), "encoder=convv"], cli_env, tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("genkit: no encoder named 'convv'")
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "outputs").exists()


def test_missing_data_names_the_path_in_one_clean_message(tmp_path, cli_env):
    missing = tmp_path / "no_mnist_here"
    result = run([*script("genkit-train"), "data=mnist", f"data.root={missing}", *FAST], cli_env, tmp_path)
    assert result.returncode == 1
    assert f"looked in {missing}" in result.stderr and "data.download=true" in result.stderr
    assert "Traceback" not in result.stderr


def test_multirun_gives_one_wandb_run_per_job_in_one_group(tmp_path, cli_env):
    sweep = tmp_path / "sweep"
    args = ["-m", "prior=normal,vamp", "encoder=mlp,conv", *FAST, f"hydra.sweep.dir={sweep}"]
    result = run([*script("genkit-train"), *args], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 4
    runs = [next(r for r in wandb_records(job, cli_env) if r["type"] == "run")["run"] for job in jobs]
    assert {r["run_group"] for r in runs} == {f"sweep-{sweep.name}"}
    names = {r["display_name"] for r in runs}
    assert len(names) == 4 and any("encoder=conv" in n and "prior=vamp" in n for n in names)
    targets = {(r["config"]["update"]["encoder"]["_target_"], r["config"]["update"]["prior"]["_target_"]) for r in runs}
    assert len(targets) == 4
    # What varies across the sweep (not the fixed trainer.max_epochs) is a config key and tags, for W&B's panels.
    for run_record in runs:
        swept = run_record["config"]["update"]["sweep"]
        assert set(swept) == {"prior", "encoder"}
        assert sorted(run_record["tags"]) == sorted(f"{key}={value}" for key, value in swept.items())
    assert all((job / "metrics.json").is_file() for job in jobs)


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path, cli_env):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "prior=normal,mog",
        "logger=csv",
        *FAST,
        f"hydra.sweep.dir={sweep}",
    ]
    result = run([*script("genkit-train"), *args], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel" in result.stdout + result.stderr
    assert all((sweep / str(i) / "metrics.json").is_file() for i in (0, 1))


def test_seed_makes_a_cpu_run_reproducible_and_compiling_or_grouping_changes_nothing(trained, tmp_path, cli_env):
    def metrics(seed: int, name: str, *extra: str) -> dict:
        out = tmp_path / name
        args = [f"seed={seed}", "logger=none", *FAST, f"hydra.run.dir={out}", *extra]
        result = run([*script("genkit-train"), *args], cli_env, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads((out / "metrics.json").read_text())["metrics"]

    # The shared run is the default seed 0 with W&B logging; media and loggers never touch the
    # numbers. compile=eager: the bound goes through torch.compile (TorchDynamo) without code
    # generation, here with Lightning running groups of two batches.
    first = json.loads((trained.folder / "metrics.json").read_text())["metrics"]
    again, other = metrics(0, "b", "compile=eager", "trainer.steps_per_execution=2"), metrics(4, "c")
    assert first == again and first != other
    assert genkit.load(tmp_path / "b" / "checkpoints" / "last.ckpt").sample(2).shape == (2, 1, 8, 8)


def test_hydra_flags_and_the_seed_experiment_compose(tmp_path, cli_env):
    result = run([*script("genkit-train"), "experiment=seed_mnist", "--cfg", "job"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.data._target_ == "genkit.data.images.MNIST" and cfg.data.batch_size == 128
    assert cfg.encoder.hidden == [128, 64] and cfg.decoder.hidden == [64, 128] and cfg.posterior.scale == "exp"
    assert cfg.model.latent_dim == 2 and cfg.model.beta == 1.0 and cfg.prior._target_.endswith("NormalPrior")
    assert cfg.likelihood._target_.endswith("BernoulliLikelihood") and cfg.optim.lr == 0.001
    assert cfg.trainer.max_epochs == 10
    assert cfg.encoder.init == cfg.posterior.init == cfg.decoder.init == "glorot_uniform"  # Keras's Dense default


def test_seed_experiment_trains_on_real_mnist(tmp_path, cli_env):
    mnist = shared_data("mnist")
    out = tmp_path / "run"
    args = [
        "experiment=seed_mnist",
        f"data.root={mnist}",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=30",
        "+trainer.limit_val_batches=3",
        "+trainer.limit_test_batches=3",
        "logger=csv",
        f"hydra.run.dir={out}",
    ]
    result = run([*script("genkit-train"), *args], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert 100 < metrics["test/nelbo"] < 400  # summed BCE + KL over 784 pixels after 30 steps
    model = genkit.load(out / "checkpoints" / "last.ckpt")
    assert model.latent_dim == 2 and [m.out_features for m in model.encoder.net if hasattr(m, "out_features")] == [
        128,
        64,
    ]


def test_wandb_failure_never_stops_training(tmp_path, cli_env):
    out = tmp_path / "run"
    result = run(
        [*script("genkit-train"), "logger.wandb.mode=no_such_mode", *FAST, f"hydra.run.dir={out}"], cli_env, tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "W&B could not start" in result.stdout + result.stderr
    assert (out / "csv" / "metrics.csv").is_file() and (out / "metrics.json").is_file()


def test_an_unreachable_wandb_server_never_stops_training(tmp_path, cli_env):
    """An API key and a W&B server address on loopback where nothing listens: online mode fails
    within logger.wandb.init_timeout, and training goes on with the local CSV log."""
    env = {**cli_env, "WANDB_API_KEY": "a" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    out = tmp_path / "run"
    args = ["logger.wandb.init_timeout=10", *FAST, f"hydra.run.dir={out}"]
    result = run([*script("genkit-train"), *args], env, tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "W&B could not start" in result.stdout + result.stderr
    assert (out / "csv" / "metrics.csv").is_file() and (out / "metrics.json").is_file()


def test_a_wandb_outage_mid_run_delays_the_end_by_at_most_finish_timeout(tmp_path, cli_env):
    """W&B starts against a server on loopback that then stops answering (tests/cli/wandb_server.py outage):
    training, the checkpoint and metrics.json are unaffected, the final upload gives up after
    logger.wandb.finish_timeout with a warning, and the W&B run stays whole on disk for `wandb sync`
    (without the timeout, W&B's finish waits on the silent server for good)."""
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("wandb_server.py")), "outage"], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(server.stdout.readline())
        env = {**cli_env, "WANDB_API_KEY": "a" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{port}"}
        out = tmp_path / "run"
        args = ["logger.wandb.finish_timeout=5", *FAST, f"hydra.run.dir={out}"]
        result = run([*script("genkit-train"), *args], env, tmp_path, timeout=300)
    finally:
        server.kill()
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "W&B could not start" not in log and "W&B did not finish uploading within 5 s" in log
    assert (out / "metrics.json").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert list(out.glob("wandb/run-*/run-*.wandb")), "the W&B run must stay on disk for wandb sync"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trainer=gpu"], "No supported gpu backend found. This machine has 0 CUDA GPU(s)"),
        (["+trainer.wings=2"], "unexpected keyword argument 'wings'. This machine has"),
    ],
)
def test_trainer_settings_this_machine_cannot_run_are_one_clear_error(args, message, tmp_path, cli_env):
    if torch.cuda.is_available() and args == ["trainer=gpu"]:
        pytest.skip("this machine has a GPU")
    args = [*args, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"]
    result = run([*script("genkit-train"), *args], cli_env, tmp_path)
    assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
    assert "Use trainer=cpu" in result.stderr and "Traceback" not in result.stderr


def test_genkit_list_shows_every_part_with_origin_and_parameters(tmp_path, cli_env, genkit_command):
    result = run([*script("genkit"), "list"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr
    for kind in ("data:", "encoders:", "posteriors:", "priors:", "decoders:", "likelihoods:", "models:"):
        assert kind in result.stdout
    assert "vamp           [genkit]  pseudo_inputs=500, init_std=0.5" in result.stdout
    assert "vae            [genkit]  latent_dim=16, beta=1.0" in result.stdout
    assert "(genkit.parts.encoders.MLPEncoder)" in result.stdout  # where each class lives
    code, only, _ = genkit_command("list", "encoders")
    assert code == 0 and "conv" in only and "priors:" not in only


#: Lists genkit's own classes from the manifest, checks that did not import them, then lists the registry.
BOTH_LISTINGS = """
import json, sys
from genkit.cli.listing import builtins_listing, listing
from genkit import plugins
manifest = [builtins_listing(None, "*"), builtins_listing("encoder", "conv*")]
imported = [m for m in ("lightning", "genkit.parts", "genkit.data", "genkit.model") if m in sys.modules]
plugins.load_builtins()
registry = [listing(None, "*"), listing("encoder", "conv*")]
print(json.dumps({"manifest": manifest, "registry": registry, "imported": imported}))
"""


def test_genkit_list_reads_genkits_own_parts_from_a_manifest_that_matches_the_registry(tmp_path, cli_env):
    """Listing genkit's own classes imports none of them (nor Lightning); what it shows is what the registry holds."""
    result = run([sys.executable, "-c", BOTH_LISTINGS], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    shown = json.loads(result.stdout)
    assert shown["imported"] == []
    assert shown["manifest"] == shown["registry"], "src/genkit/cli/builtins.json is stale: python -m genkit.cli.listing"
    assert "  conv           [genkit]  channels=[32, 64]" in shown["manifest"][1] and "mlp" not in shown["manifest"][1]


def test_clipping_accumulation_a_plateau_schedule_and_a_profiler_from_the_command_line(tmp_path, cli_env):
    """genkit steps the optimiser itself and replaces Lightning's default profiler; the Trainer's arguments
    for both still work as Lightning users expect."""
    out = tmp_path / "run"
    args = [
        *FAST,
        "logger=none",
        "trainer.gradient_clip_val=0.5",
        "+trainer.accumulate_grad_batches=3",
        "scheduler=plateau",
        "scheduler.patience=0",
        "+trainer.profiler=simple",
        f"hydra.run.dir={out}",
    ]
    result = run([*script("genkit-train"), *args], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FIT Profiler Report" in result.stderr and "[Callback]Media.on_train_batch_end" in result.stderr
    saved = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2 * 4  # digits: 10 batches an epoch, a step after 3, 6, 9 and the last
    plateau = saved["lr_schedulers"][0]
    assert plateau["last_epoch"] == 2  # stepped once per epoch on val/nelbo
    refused = tmp_path / "refused"
    bad = [*script("genkit-train"), *args, "+trainer.gradient_clip_algorithm=max", f"hydra.run.dir={refused}"]
    bad = run(bad, cli_env, tmp_path)
    assert bad.returncode == 1 and "gradient_clip_algorithm must be 'norm' or 'value', got 'max'" in bad.stderr
    assert "Traceback" not in bad.stderr and not (refused / "checkpoints").exists()  # refused before training


def test_a_run_that_trained_no_step_says_so_instead_of_naming_a_best_checkpoint(tmp_path, caplog):
    from genkit.config import train_config
    from genkit.training.run import train

    with caplog.at_level("INFO"):
        metrics = train(train_config(["trainer.max_epochs=0", "logger=none"]), tmp_path / "run")
    assert "no training step was taken (trainer.max_epochs=0" in caplog.text
    assert "val/test: the initial weights: no training step was taken" in caplog.text
    assert "best checkpoint" not in caplog.text and "val/nelbo" in metrics
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["best_checkpoint"] == ""
