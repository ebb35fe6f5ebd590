"""The tools for trained models (sample, reconstruct, interpolate, denoise, latent-map, anomaly) end to
end on image models; text and audio outputs are in test_modalities.py."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from PIL import Image

import genkit
from conftest import on_terminal, run, script
from genkit import console
from genkit.cli.denoise import add_noise
from genkit.cli.interpolate import slerp
from genkit.data.images import Digits
from genkit.training.metrics import evaluate


def test_sample_and_reconstruct_write_image_grids_beside_the_checkpoint(trained, tmp_path, cli_env):
    checkpoint = trained.copy(tmp_path / "run") / "checkpoints" / "last.ckpt"
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


def test_denoise_scores_noisy_and_denoised_images_over_the_split(trained, tmp_path, cli_env):
    out = tmp_path / "denoise.png"
    words = [f"ckpt={trained.checkpoint}", "noise=salt_pepper", "level=0.2", "n=5", f"out={out}"]
    result = run([*script("genkit"), "denoise", *words], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(out).size == (52, 32)  # clean, noisy and denoised rows of 5 digits
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["examples"] == 359 and report["noise"] == "salt_pepper"  # the whole digits test split
    from genkit.data.images import Digits

    digits = Digits()
    digits.setup()
    clean = digits.splits["test"]["x"]
    noisy = add_noise(clean, "salt_pepper", 0.2, torch.Generator().manual_seed(0))
    psnr = 10 * torch.log10(1 / (noisy - clean).square().mean((1, 2, 3)))  # per image, data range 1
    assert report["noisy"]["psnr"] == pytest.approx(float(psnr.mean()), rel=1e-4)
    assert 0 < report["denoised"]["ssim"] <= 1 and report["denoised"]["psnr"] > 5


def test_denoise_refuses_what_it_cannot_do(trained, capsys):
    from genkit.cli.main import main

    for words, message in (
        (["noise=blur"], "noise must be one of gaussian, salt_pepper, got 'blur'"),
        (["noise=salt_pepper", "level=1.5"], "at most 1 for salt_pepper"),
        (["level=0"], "level must be above 0"),
    ):
        assert main(["denoise", f"ckpt={trained.checkpoint}", *words]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["nn=3"], "Key 'nn' not in 'SampleOptions'"),
        (["n=0"], "n must be at least 1"),
        (["n=abc"], "could not be converted to Integer"),
    ],
)
def test_sample_refuses_bad_options_with_usage(words, message, trained, genkit_command):
    code, _, err = genkit_command("sample", f"ckpt={trained.checkpoint}", *words)
    assert code == 2 and message in err and "Usage: genkit sample ckpt=PATH" in err


def test_anomaly_detects_the_class_the_model_never_saw(tmp_path, cli_env, genkit_command):
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
    code, _, err = genkit_command("anomaly", f"ckpt={ckpt}", "score=entropy")
    assert code == 2 and "score must be nll or rec" in err


def test_interpolate_writes_linear_and_spherical_rows(trained, tmp_path, cli_env, genkit_command):
    out = tmp_path / "path.png"
    args = [f"ckpt={trained.checkpoint}", "a=0", "b=5", "steps=6", f"out={out}"]
    result = run([*script("genkit"), "interpolate", *args], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(out).size == (82, 22)  # 2 rows (linear, slerp) of a, 6 decoded points, b
    code, _, err = genkit_command("interpolate", f"ckpt={trained.checkpoint}", "a=999")
    assert code == 2 and "a=999 is outside the test split (0 to 358)" in err


def test_latent_map_projects_many_dimensions_and_draws_the_manifold_of_two(trained, tmp_path, cli_env, capsys, caplog):
    from genkit.cli.main import main

    pca = tmp_path / "pca.png"
    with caplog.at_level("INFO", logger="genkit.summary"):
        assert main(["latent-map", f"ckpt={trained.checkpoint}", f"out={pca}"]) == 0
    assert Image.open(pca).size[0] > 400 and not (tmp_path / "pca.manifold.png").exists()
    assert "of the variance" in caplog.text
    tsne = tmp_path / "tsne.png"
    assert main(["latent-map", f"ckpt={trained.checkpoint}", "method=tsne", "max_points=100", f"out={tsne}"]) == 0
    assert tsne.is_file()
    assert main(["latent-map", f"ckpt={trained.checkpoint}", "method=umap"]) == 2
    assert "method must be pca or tsne, got 'umap'" in capsys.readouterr().err

    two = tmp_path / "two"
    args = ["logger=none", "model.latent_dim=2", "trainer.max_epochs=1", "callbacks.progress_bar.refresh_rate=0"]
    result = run([*script("genkit-train"), *args, f"hydra.run.dir={two}"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert main(["latent-map", f"ckpt={two / 'checkpoints' / 'last.ckpt'}", "grid=5"]) == 0
    manifold = two / "checkpoints" / "last.manifold.png"
    assert Image.open(manifold).size == (52, 52)  # 5x5 decoded digits with 2-pixel padding
    assert (two / "checkpoints" / "last.latent_map.png").is_file()


def test_slerp_follows_the_great_circle():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    t = torch.linspace(0, 1, 5)
    path = slerp(a, b, t)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path.norm(dim=1), torch.full((5,), 3.0))  # linear would dip to 2.12 midway
    torch.testing.assert_close(slerp(a, 2 * a, t)[2], 1.5 * a)  # parallel latents: linear


def test_long_commands_show_progress_on_a_terminal_and_in_logs(trained, tmp_path, cli_env, monkeypatch, caplog):
    args = [*script("genkit"), "anomaly", f"ckpt={trained.checkpoint}", "k=2", f"out={tmp_path / 'scores.json'}"]
    shown = on_terminal(args, cli_env, tmp_path)
    assert "anomaly scores (nll)" in shown and "━" in shown  # Rich's bar

    monkeypatch.setattr(console, "PROGRESS_EVERY", 0.0)  # a line after every batch, instead of every 30 s
    data = Digits(batch_size=64)  # six test batches
    data.setup()
    with caplog.at_level(logging.INFO, logger="genkit"):
        evaluate(genkit.load(trained.checkpoint), data.test_dataloader(), 2, 2**20, torch.device("cpu"))
    lines = [r.getMessage() for r in caplog.records if r.name == "genkit.console"]
    assert lines and lines[0].startswith("-ELBO and NLL (k=2): 1/") and "s left" in lines[0]
