"""genkit-eval end to end on a checkpoint trained in the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FAST, run, script, wandb_log_records


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny digits model, trained once for this module's tests."""
    import os

    root = tmp_path_factory.mktemp("trained")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    result = run([*script("genkit-train"), "logger=none", *FAST, f"hydra.run.dir={root}"], env, root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "checkpoints" / "last.ckpt"


def test_eval_reports_the_bound_and_the_nll_beside_the_checkpoint(checkpoint, tmp_path, cli_env):
    result = run([*script("genkit-eval"), f"ckpt={checkpoint}", "nll.k=64"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NLL (k=64)" in result.stdout + result.stderr
    report = json.loads(checkpoint.with_name("last.test.eval.json").read_text())
    metrics = report["metrics"]
    assert report["split"] == "test" and report["nll_k"] == 64 and report["data"] == "digits"
    assert metrics["nll"] <= metrics["nelbo"] + 0.1  # the importance-weighted bound is the tighter one
    assert metrics["nelbo"] == pytest.approx(metrics["rec"] + metrics["kl"], rel=1e-4)
    assert {"bpd", "active_units"} <= metrics.keys()
    val = run([*script("genkit-eval"), f"ckpt={checkpoint}", "split=val", "nll.k=4"], cli_env, tmp_path)
    assert val.returncode == 0 and checkpoint.with_name("last.val.eval.json").is_file()


def test_eval_adds_its_results_to_the_summary_of_the_run_that_trained_the_checkpoint(tmp_path, cli_env):
    out = tmp_path / "run"
    trained = run(
        [*script("genkit-train"), "trainer.max_epochs=1", *FAST[1:], f"hydra.run.dir={out}"], cli_env, tmp_path
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    ckpt = out / "checkpoints" / "last.ckpt"
    result = run([*script("genkit-eval"), f"ckpt={ckpt}", "nll.k=4"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = (out / "wandb-run-id").read_text().strip()
    training, evaluation = sorted(out.glob("wandb/offline-run-*"))  # the same W&B run, continued
    assert training.name.endswith(run_id) and evaluation.name.endswith(run_id)
    records = wandb_log_records(next(evaluation.glob("run-*.wandb")), cli_env)
    summary = {k: v for r in records if r["type"] == "summary" for k, v in r["summary"]["update"].items()}
    metrics = json.loads(ckpt.with_name("last.test.eval.json").read_text())["metrics"]
    assert summary["eval/test/nll"] == pytest.approx(metrics["nll"]) and summary["eval/test/nll_k"] == 4
    assert summary["eval/test/nelbo"] == pytest.approx(metrics["nelbo"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ckpt=/nowhere/model.ckpt"], "checkpoint /nowhere/model.ckpt does not exist"),
        (["nll.k=0"], "nll.k must be at least 1"),
        (["split=tset"], "split must be train, val or test, got 'tset'"),
    ],
)
def test_eval_refuses_bad_input_cleanly(args, message, checkpoint, tmp_path, cli_env):
    args = args if args[0].startswith("ckpt=") else [f"ckpt={checkpoint}", *args]
    result = run([*script("genkit-eval"), *args], cli_env, tmp_path)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_eval_on_data_of_another_shape_names_both(checkpoint, tmp_path, cli_env):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(np.full((16, 16, 3), i * 10, dtype=np.uint8)).save(folder / f"{i}.png")
    args = [
        f"ckpt={checkpoint}",
        "+data._target_=genkit.data.images.ImageFolder",
        f"+data.path={folder}",
        "+data.size=16",
    ]
    result = run([*script("genkit-eval"), *args], cli_env, tmp_path)
    assert result.returncode == 1
    assert "gives image [3, 16, 16]" in result.stderr and "trained on image [1, 8, 8]" in result.stderr


def test_a_file_that_is_not_a_genkit_checkpoint_is_refused(tmp_path, cli_env):
    import torch

    fake = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, fake)
    result = run([*script("genkit-eval"), f"ckpt={fake}"], cli_env, tmp_path)
    assert result.returncode == 1 and "is not a genkit checkpoint" in result.stderr


class RunsCode:
    """Unpickling this would run a shell command: what a malicious shared checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_whose_pickle_runs_code_is_refused_without_running_it(checkpoint, tmp_path, cli_env):
    import torch

    marker = tmp_path / "pwned"
    crafted = torch.load(checkpoint, map_location="cpu", weights_only=True)
    crafted["genkit"]["payload"] = RunsCode(marker)
    bad = tmp_path / "shared.ckpt"
    torch.save(crafted, bad)
    for command in (["genkit-eval", f"ckpt={bad}"], ["genkit", "sample", f"ckpt={bad}"]):
        result = run([*script(command[0]), *command[1:]], cli_env, tmp_path)
        assert result.returncode != 0 and f"checkpoint {bad} cannot be read" in result.stderr
        assert "Weights only load failed" in result.stderr or "Unsupported global" in result.stderr
    assert not marker.exists(), "loading a shared checkpoint ran code from it"


@pytest.mark.parametrize(
    ("key", "target", "message"),
    [
        ("encoder", "os.system", "'os.system' is not a registered encoder: genkit only builds registered parts"),
        ("data", "subprocess.Popen", "'subprocess.Popen' is not a registered data"),
        ("optim", "builtins.exec", "optim._target_ must be a torch.optim class, got 'builtins.exec'"),
    ],
)
def test_a_checkpoint_config_naming_unregistered_code_is_refused(key, target, message, checkpoint, tmp_path, cli_env):
    import torch

    crafted = torch.load(checkpoint, map_location="cpu", weights_only=True)
    crafted["genkit"]["config"][key]["_target_"] = target
    bad = tmp_path / "shared.ckpt"
    torch.save(crafted, bad)
    result = run([*script("genkit-eval"), f"ckpt={bad}"], cli_env, tmp_path)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]


def test_sample_and_reconstruct_write_image_grids_beside_the_checkpoint(checkpoint, tmp_path, cli_env):
    result = run([*script("genkit"), "sample", f"ckpt={checkpoint}", "n=9", "temperature=0.5"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    samples = checkpoint.with_name("last.samples.png")
    assert Image.open(samples).size == (32, 32)  # a 3x3 grid of 8x8 digits with 2-pixel padding
    out = tmp_path / "grids" / "recon.png"
    result = run(
        [*script("genkit"), "reconstruct", f"ckpt={checkpoint}", "n=4", "split=val", f"out={out}"], cli_env, tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(out).size == (42, 22)  # inputs above reconstructions: 2 rows of 4


def test_denoise_scores_noisy_and_denoised_images_over_the_split(checkpoint, tmp_path, cli_env):
    out = tmp_path / "denoise.png"
    words = [f"ckpt={checkpoint}", "noise=salt_pepper", "level=0.2", "n=5", f"out={out}"]
    result = run([*script("genkit"), "denoise", *words], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(out).size == (52, 32)  # clean, noisy and denoised rows of 5 digits
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["examples"] == 359 and report["noise"] == "salt_pepper"  # the whole digits test split
    import torch

    from genkit.registry import registry
    from genkit.tools import add_noise

    digits = registry("data").get("digits").cls()
    digits.setup()
    clean = digits.splits["test"]["x"]
    noisy = add_noise(clean, "salt_pepper", 0.2, torch.Generator().manual_seed(0))
    psnr = 10 * torch.log10(1 / (noisy - clean).square().mean((1, 2, 3)))  # per image, data range 1
    assert report["noisy"]["psnr"] == pytest.approx(float(psnr.mean()), rel=1e-4)
    assert 0 < report["denoised"]["ssim"] <= 1 and report["denoised"]["psnr"] > 5


def test_denoise_refuses_what_it_cannot_do(checkpoint, capsys):
    from genkit.cli.main import main

    for words, message in (
        (["noise=blur"], "noise must be one of gaussian, salt_pepper, got 'blur'"),
        (["noise=salt_pepper", "level=1.5"], "at most 1 for salt_pepper"),
        (["level=0"], "level must be above 0"),
    ):
        assert main(["denoise", f"ckpt={checkpoint}", *words]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["nn=3"], "Key 'nn' not in 'SampleOptions'"),
        (["n=0"], "n must be at least 1"),
        (["n=abc"], "could not be converted to Integer"),
    ],
)
def test_sample_refuses_bad_options_with_usage(words, message, checkpoint, tmp_path, cli_env):
    result = run([*script("genkit"), "sample", f"ckpt={checkpoint}", *words], cli_env, tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Usage: genkit sample ckpt=PATH" in result.stderr


def test_anomaly_detects_the_class_the_model_never_saw(tmp_path, cli_env):
    out = tmp_path / "run"
    args = [
        "data.exclude_labels=[7]",
        "trainer.max_epochs=50",
        "logger=none",
        "callbacks.progress_bar.refresh_rate=0",
        f"hydra.run.dir={out}",
    ]
    trained = run([*script("genkit-train"), *args], cli_env, tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    ckpt = out / "checkpoints" / "last.ckpt"
    result = run([*script("genkit"), "anomaly", f"ckpt={ckpt}", "k=20"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(ckpt.with_name("last.anomaly.json").read_text())
    assert report["anomalous_labels"] == [7] and report["examples"] == 359
    assert report["roc_auc"] > 0.8  # sevens score clearly higher NLL than the digits it was trained on
    bad = run([*script("genkit"), "anomaly", f"ckpt={ckpt}", "score=entropy"], cli_env, tmp_path)
    assert bad.returncode == 2 and "score must be nll or rec" in bad.stderr


def test_interpolate_writes_linear_and_spherical_rows(checkpoint, tmp_path, cli_env):
    out = tmp_path / "path.png"
    args = [f"ckpt={checkpoint}", "a=0", "b=5", "steps=6", f"out={out}"]
    result = run([*script("genkit"), "interpolate", *args], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(out).size == (82, 22)  # 2 rows (linear, slerp) of a, 6 decoded points, b
    bad = run([*script("genkit"), "interpolate", f"ckpt={checkpoint}", "a=999"], cli_env, tmp_path)
    assert bad.returncode == 2 and "a=999 is outside the test split (0 to 358)" in bad.stderr


def test_latent_map_projects_many_dimensions_and_draws_the_manifold_of_two(
    checkpoint, tmp_path, cli_env, capsys, caplog
):
    from genkit.cli.main import main

    pca = tmp_path / "pca.png"
    with caplog.at_level("INFO", logger="genkit.tools"):
        assert main(["latent-map", f"ckpt={checkpoint}", f"out={pca}"]) == 0
    assert Image.open(pca).size[0] > 400 and not (tmp_path / "pca.manifold.png").exists()
    assert "of the variance" in caplog.text
    tsne = tmp_path / "tsne.png"
    assert main(["latent-map", f"ckpt={checkpoint}", "method=tsne", "max_points=100", f"out={tsne}"]) == 0
    assert tsne.is_file()
    assert main(["latent-map", f"ckpt={checkpoint}", "method=umap"]) == 2
    assert "method must be pca or tsne, got 'umap'" in capsys.readouterr().err

    two = tmp_path / "two"
    args = ["logger=none", "model.latent_dim=2", "trainer.max_epochs=1", "callbacks.progress_bar.refresh_rate=0"]
    result = run([*script("genkit-train"), *args, f"hydra.run.dir={two}"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert main(["latent-map", f"ckpt={two / 'checkpoints' / 'last.ckpt'}", "grid=5"]) == 0
    manifold = two / "checkpoints" / "last.manifold.png"
    assert Image.open(manifold).size == (52, 52)  # 5x5 decoded digits with 2-pixel padding
    assert (two / "checkpoints" / "last.latent_map.png").is_file()
