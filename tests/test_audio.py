"""Audio: features against librosa, clip decoding, bad files, splits, Griffin-Lim, an end-to-end run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import genkit
from conftest import FAST, run, script, shared_data, wandb_records
from genkit.audio import AudioFeatures, AudioSettings
from genkit.compose import train_config
from genkit.data import audio as audio_data
from genkit.data.audio import AudioFolder, read_clip
from genkit.errors import DataError, DataNotFoundError

RATE = 8000


def tone(frequency: float, seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


def digits_folder(tmp_path: Path, speakers: tuple[str, ...] = ("ann", "bob"), takes: int = 6) -> Path:
    """FSDD-like recordings ``{digit}_{speaker}_{take}.wav``: a digit is a pitch, a speaker a loudness."""
    folder = tmp_path / "recordings"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for digit in range(4):
        for s, speaker in enumerate(speakers):
            for take in range(takes):
                seconds = 0.2 + 0.05 * take
                wave = tone(300 + 200 * digit, seconds) * (0.5 + 0.5 * s) + 0.01 * rng.standard_normal(
                    round(seconds * RATE)
                )
                soundfile.write(folder / f"{digit}_{speaker}_{take}.wav", wave.astype(np.float32), RATE)
    return folder


def folder_data(folder: Path, tmp_path: Path, **options) -> AudioFolder:
    settings = {"sample_rate": RATE, "duration": 0.5, "n_fft": 256, "hop_length": 64, "n_mels": 32}
    return AudioFolder(path=str(folder), cache_dir=str(tmp_path / "cache"), **{**settings, **options})


def test_log_mel_matches_librosa_on_a_tone():
    import librosa

    wave = tone(440, 0.5) + tone(1900, 0.5) * 0.1
    settings = AudioSettings(sample_rate=RATE, num_samples=len(wave), n_fft=256, hop_length=64, n_mels=40)
    ours = AudioFeatures(settings).mel_db(torch.from_numpy(wave)[None])[0].numpy()
    power = librosa.feature.melspectrogram(
        y=wave, sr=RATE, n_fft=256, hop_length=64, n_mels=40, center=True, pad_mode="constant", power=2.0
    )
    reference = librosa.power_to_db(power, ref=1.0, amin=1e-8, top_db=None)
    assert ours.shape == reference.shape == (40, settings.frames)
    assert np.abs(ours - reference).max() < 1e-2  # dB, float32 against float64


def test_clips_are_resampled_mixed_down_cropped_and_padded(tmp_path):
    stereo = np.stack([tone(440, 0.3, 16000), tone(440, 0.3, 16000)], 1)
    soundfile.write(tmp_path / "stereo16k.flac", stereo, 16000)
    soundfile.write(tmp_path / "long.wav", tone(1000, 2.0), RATE)

    clip, what = read_clip(tmp_path / "stereo16k.flac", RATE, RATE)
    assert clip.shape == (RATE,) and what == "mixed down and resampled"
    assert dominant_frequency(clip[: int(0.3 * RATE)], RATE) == pytest.approx(440, abs=5)
    assert np.abs(clip[int(0.31 * RATE) :]).max() == 0  # zero-padded after the 0.3 s of sound

    clip, what = read_clip(tmp_path / "long.wav", RATE, RATE // 2)
    assert clip.shape == (RATE // 2,) and what == ""
    np.testing.assert_allclose(clip, tone(1000, 2.0)[: RATE // 2], atol=1e-4)  # cropped from the start


def test_bad_files_are_skipped_counted_and_named(tmp_path, caplog):
    folder = digits_folder(tmp_path)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    soundfile.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), RATE)
    (folder / "song.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 64)
    (folder / "notes.txt").write_text("not audio, not counted")
    data = folder_data(folder, tmp_path)
    with caplog.at_level(logging.WARNING):
        splits = data.corpus[1]
    assert sum(len(s["x"]) for s in splits.values()) == 48
    warnings = caplog.text
    for name, why in (("corrupt.wav", "unreadable"), ("empty.wav", "empty"), ("song.m4a", "unreadable")):
        assert f"{name}: {why}" in warnings
    assert "skipped 3 of 51 audio files" in warnings

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "corrupt.wav").write_bytes(b"nothing")
    with pytest.raises(DataError, match="none of the 1 audio files"):
        folder_data(only_bad, tmp_path).load_splits()
    (tmp_path / "silent").mkdir()
    with pytest.raises(DataNotFoundError, match="has no audio files"):
        folder_data(tmp_path / "silent", tmp_path).load_splits()
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        folder_data(tmp_path / "missing", tmp_path).load_splits()


def test_splits_follow_file_patterns_labels_and_the_cache_skips_decoding(tmp_path, monkeypatch):
    folder = digits_folder(tmp_path)
    data = folder_data(folder, tmp_path, test_files=r"_[0-1]\.wav$", val_files=r"_2\.wav$", label_pattern=r"(\d)_")
    splits = data.corpus[1]
    assert {name: len(s["x"]) for name, s in splits.items()} == {"test": 16, "val": 8, "train": 24}
    assert data.spec.event_shape == (1, 32, 1 + 4000 // 64) and data.spec.extra["classes"] == ["0", "1", "2", "3"]
    assert sorted(splits["val"]["y"].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    train = splits["train"]["x"]
    assert train.mean().abs() < 1e-4 and (train.std((0, 3)) - 1).abs().max() < 0.05  # per-band normalised

    monkeypatch.setattr(audio_data, "read_clip", lambda *a: pytest.fail("decoded although cached"))
    again = folder_data(folder, tmp_path, test_files=r"_[0-1]\.wav$", val_files=r"_2\.wav$", label_pattern=r"(\d)_")
    torch.testing.assert_close(again.corpus[1]["train"]["x"], train)
    monkeypatch.undo()
    (cache,) = (tmp_path / "cache").glob("*.pt")
    cache.write_bytes(cache.read_bytes()[:100])  # a cache cut short (a full disk, a killed run)
    third = folder_data(folder, tmp_path, test_files=r"_[0-1]\.wav$", val_files=r"_2\.wav$", label_pattern=r"(\d)_")
    torch.testing.assert_close(third.corpus[1]["train"]["x"], train)  # decoded again

    with pytest.raises(DataError, match=r"the val split .* is empty"):
        folder_data(folder, tmp_path, val_files="no-such-file").load_splits()
    with pytest.raises(DataError, match="label_pattern"):
        folder_data(folder, tmp_path, label_pattern=r"speaker-(\w+)").load_splits()


def test_griffin_lim_and_waveforms_give_clips_of_the_clip_length(tmp_path):
    folder = digits_folder(tmp_path)
    data = folder_data(folder, tmp_path, label_pattern=r"(\d)_")
    features = AudioFeatures.of(data.spec)
    train = data.corpus[1]["train"]
    audio = features.to_audio(train["x"][:3])
    assert audio.shape == (3, RATE // 2) and audio.dtype == np.float32 and np.abs(audio).max() <= 1
    for wave, digit in zip(audio, train["y"][:3].tolist()):  # the pitch survives mel -> Griffin-Lim
        assert dominant_frequency(wave, RATE) == pytest.approx(300 + 200 * digit, abs=60)
    from genkit.audio import write_wavs

    (file,) = write_wavs(tmp_path / "out", {"clip": audio[0]}, RATE)
    info = soundfile.info(file)
    assert info.samplerate == RATE and info.frames == RATE // 2

    waves = folder_data(folder, tmp_path, representation="waveform")
    assert waves.spec.event_shape == (1, RATE // 2) and waves.corpus[1]["train"]["x"].abs().max() <= 1


def test_waveform_parts_pass_the_plugin_authors_check(tmp_path):
    from genkit.testing import check_part

    folder = digits_folder(tmp_path)
    overrides = [
        "experiment=audio",
        f"data.path={folder}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.representation=waveform",
        f"data.sample_rate={RATE}",
        "data.duration=0.5",
        "encoder=conv1d",
        "decoder=conv1d",
        "encoder.channels=[8,16]",
        "decoder.channels=[16,8]",
        "model.latent_dim=4",
    ]
    model = check_part("decoder", "conv1d", data="audio_folder", overrides=overrides)
    assert model.decode(torch.zeros(2, 4)).mean.shape == (2, 1, RATE // 2)


SMALL = [
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


def test_audio_vae_trains_logs_clips_and_reloads_the_same_features(tmp_path, cli_env):
    folder = digits_folder(tmp_path)
    out = tmp_path / "run"
    args = [*script("genkit-train"), "experiment=audio", f"data.path={folder}", *FAST, *SMALL, f"hydra.run.dir={out}"]
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
    cfg = train_config(["experiment=audio", f"data.path={folder}", *SMALL, "data.cache_dir="])
    fresh = AudioFolder(**{k: v for k, v in cfg.data.items() if not k.startswith("_")})
    assert model.spec.extra["audio"] == fresh.spec.extra["audio"]  # the normalisation travels
    names, clips = fresh.decoded()
    train = fresh.assign_splits(names)["train"]
    from_checkpoint = AudioFeatures.of(model.spec).logmel(clips[train])
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


def test_fsdd_preset_reads_the_official_split():
    folder = shared_data("fsdd")
    cfg = train_config(["experiment=audio_fsdd", f"data.path={folder}", "data.cache_dir="])
    data = AudioFolder(**{k: v for k, v in cfg.data.items() if not k.startswith("_")})
    splits = data.corpus[1]
    assert {name: len(s["x"]) for name, s in splits.items()} == {"test": 300, "val": 300, "train": 2400}
    assert data.spec.event_shape == (1, 64, 63) and data.spec.extra["classes"] == [str(d) for d in range(10)]
    assert torch.bincount(splits["test"]["y"]).tolist() == [30] * 10
