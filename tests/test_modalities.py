"""Each modality end to end: a text and an audio VAE trained from the command line, their media
(W&B tables, clips and spectrograms, files in the run folder), the tools' outputs (sentences,
WAV folders), and the reloaded model computing what training computed."""

from __future__ import annotations

import json

import soundfile
import torch

import genkit
from conftest import FAST, RATE, corpus_folder, digits_folder, run, script, wandb_records
from genkit.audio import AudioFeatures
from genkit.config import train_config
from genkit.data.audio import PCM_SCALE, AudioFolder
from genkit.data.decoding import decode_in_memory
from genkit.data.text import decode_tokens

#: Small parts, so a model builds and trains in moments.
SMALL_TEXT = [
    "encoder.hidden=32",
    "encoder.embedding_dim=16",
    "decoder.hidden=32",
    "decoder.embedding_dim=16",
    "model.latent_dim=4",
]
SMALL_AUDIO = [
    f"data.sample_rate={RATE}",
    "data.duration=0.5",
    "data.n_fft=256",
    "data.hop_length=64",
    "data.n_mels=32",
    "data.batch_size=16",
    "encoder.channels=[8,16]",
    "decoder.channels=[16,8]",
    "encoder.hidden=32",
    "decoder.hidden=32",
    "model.latent_dim=4",
    "model.kl_warmup_steps=4",
    "callbacks.media.n_audio=2",
]


def test_sentence_vae_trains_logs_tables_and_reloads_decoding_identically(tmp_path, cli_env):
    folder = corpus_folder(tmp_path)
    out = tmp_path / "run"
    args = [
        *script("genkit-train"),
        "experiment=text",
        f"data.path={folder}",
        *FAST,
        *SMALL_TEXT,
        f"hydra.run.dir={out}",
    ]
    result = run(args, cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "perplexity" in result.stdout and "samples from the prior" in result.stdout + result.stderr
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    for name in ("nelbo", "kl", "ppl", "mi", "active_units"):
        assert f"test/{name}" in metrics
    assert 1 < metrics["test/ppl"] < 60

    records = wandb_records(out, cli_env)
    logged = json.dumps([r for r in records if r["type"] == "history"])
    assert "val/samples" in logged and "val/reconstructions" in logged and "table-file" in logged

    model = genkit.load(out / "checkpoints" / "last.ckpt")
    torch.manual_seed(0)  # the seed the media callback samples with (its greedy reconstructions draw nothing)
    written = (out / "samples.txt").read_text().split("\n\n")[0].splitlines()[1:]
    assert decode_tokens(model.spec, model.sample(16)) == written

    sampled = run([*script("genkit"), "sample", f"ckpt={out / 'checkpoints' / 'last.ckpt'}", "n=5"], cli_env, tmp_path)
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert len((out / "checkpoints" / "last.samples.txt").read_text().splitlines()) == 5


def test_audio_vae_trains_logs_clips_and_reloads_the_same_features(tmp_path, cli_env):
    folder = digits_folder(tmp_path)
    out = tmp_path / "run"
    args = [
        *script("genkit-train"),
        "experiment=audio",
        f"data.path={folder}",
        *FAST,
        *SMALL_AUDIO,
        f"hydra.run.dir={out}",
    ]
    result = run(args, cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mel L1 (dB)" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    for name in ("nelbo", "kl", "active_units", "mel_l1", "spectral_convergence"):
        assert f"test/{name}" in metrics
    assert 0 < metrics["test/spectral_convergence"] < 2 and 0 < metrics["test/mel_l1"] < 80
    assert len(list((out / "audio").glob("*.wav"))) == 6 and (out / "reconstructions.png").is_file()

    records = wandb_records(out, cli_env)
    logged = json.dumps([r for r in records if r["type"] == "history"])
    for key in ("val/audio/inputs", "val/audio/reconstructions", "val/audio/samples", "val/reconstructions"):
        assert key in logged
    assert list(out.glob("wandb/offline-run-*/files/media/audio/**/*.wav"))

    ckpt = out / "checkpoints" / "last.ckpt"
    model = genkit.load(ckpt)
    cfg = train_config(["experiment=audio", f"data.path={folder}", *SMALL_AUDIO, "data.cache_dir="])
    fresh = AudioFolder(**{k: v for k, v in cfg.data.items() if not k.startswith("_")})
    assert model.spec.audio == fresh.spec.audio  # the normalisation travels
    clips = decode_in_memory(fresh.recipe())["train"]["x"].float() / PCM_SCALE
    from_checkpoint = AudioFeatures.of(model.spec).logmel(clips)
    torch.testing.assert_close(from_checkpoint, fresh.corpus[1]["train"]["x"])

    sampled = run([*script("genkit"), "sample", f"ckpt={ckpt}", "n=3"], cli_env, tmp_path)
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    written = sorted((out / "checkpoints" / "last.samples").glob("*.wav"))
    assert len(written) == 3 and soundfile.info(written[0]).samplerate == RATE

    from genkit.cli.main import main

    assert main(["reconstruct", f"ckpt={ckpt}", "n=2", "data.cache_dir=''"]) == 0
    pairs = out / "checkpoints" / "last.reconstructions"
    assert sorted(p.name for p in pairs.glob("*.wav")) == [
        "input_000.wav",
        "input_001.wav",
        "reconstruction_000.wav",
        "reconstruction_001.wav",
    ]
    assert main(["interpolate", f"ckpt={ckpt}", "steps=3", "path=linear", "data.cache_dir=''"]) == 0
    path = out / "checkpoints" / "last.interpolation"
    assert len(list(path.glob("linear_*.wav"))) == 5 and (path / "spectrograms.png").is_file()  # a, 3 steps, b
