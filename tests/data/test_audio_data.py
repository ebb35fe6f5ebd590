"""Audio data: log-mel features against librosa, clip decoding, bad files, splits and the cache,
Griffin-Lim, the FSDD preset."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import RATE, digits_folder, shared_data, tone
from genkit.audio import AudioFeatures, AudioSettings
from genkit.config import train_config
from genkit.data import audio as audio_data
from genkit.data.audio import AudioFolder, read_clip
from genkit.errors import DataError, DataNotFoundError


def dominant_frequency(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


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
        assert f"{name} ({why}" in warnings
    assert "skipped 3 unusable item(s) of audio_folder" in warnings and "(unreadable (Format not recognised" in warnings

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    for i in range(10):  # one file for each of val and test, eight for training
        (only_bad / f"corrupt{i}.wav").write_bytes(b"nothing")
    with pytest.raises(DataError, match="none of the 10 items of audio_folder"):
        folder_data(only_bad, tmp_path).load_splits()
    (tmp_path / "silent").mkdir()
    with pytest.raises(DataNotFoundError, match="has no audio files"):
        folder_data(tmp_path / "silent", tmp_path).load_splits()
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        folder_data(tmp_path / "missing", tmp_path).load_splits()


def test_hidden_folders_are_skipped_below_the_data_folder_only(tmp_path):
    under_cache = tmp_path / ".cache" / "datasets"  # like ~/.cache/datasets/fsdd
    under_cache.mkdir(parents=True)
    folder = digits_folder(under_cache)
    (folder / ".trash").mkdir()
    soundfile.write(folder / ".trash" / "0_old_0.wav", tone(300, 0.2), RATE)
    soundfile.write(folder / "._0_ann_0.wav", tone(300, 0.2), RATE)  # a macOS resource-fork file
    assert len(audio_data.audio_files(folder)) == 48


def test_splits_follow_file_patterns_labels_and_the_cache_skips_decoding(tmp_path, monkeypatch):
    folder = digits_folder(tmp_path)
    data = folder_data(folder, tmp_path, test_files=r"_[0-1]\.wav$", val_files=r"_2\.wav$", label_pattern=r"(\d)_")
    splits = data.corpus[1]
    assert {name: len(s["x"]) for name, s in splits.items()} == {"test": 16, "val": 8, "train": 24}
    assert data.spec.event_shape == (1, 32, 1 + 4000 // 64) and data.spec.classes == ("0", "1", "2", "3")
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
    assert waves.spec.event_shape == (1, RATE // 2)
    assert waves.corpus[1]["train"]["x"].dtype == torch.int16  # held as 16-bit PCM: half of float32
    x = waves.examples("train")["x"]
    assert x.dtype == torch.float32 and 0.1 < x.abs().max() <= 1  # what the model reads


def test_fsdd_preset_reads_the_official_split():
    folder = shared_data("fsdd")
    cfg = train_config(["experiment=audio_fsdd", f"data.path={folder}", "data.cache_dir="])
    data = AudioFolder(**{k: v for k, v in cfg.data.items() if not k.startswith("_")})
    splits = data.corpus[1]
    assert {name: len(s["x"]) for name, s in splits.items()} == {"test": 300, "val": 300, "train": 2400}
    assert data.spec.event_shape == (1, 64, 63) and data.spec.classes == tuple(str(d) for d in range(10))
    assert torch.bincount(splits["test"]["y"]).tolist() == [30] * 10
