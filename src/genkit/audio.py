"""Audio features and their inverse: log-mel spectrograms in torch, audio back by Griffin-Lim.

The settings (``genkit.spec.AudioSettings``: sample rate, STFT and mel parameters, the
training split's per-band normalisation) travel in the data spec, hence in every
checkpoint: a reloaded model computes the same features and turns its outputs into sound
without the data set.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from genkit.spec import REPRESENTATIONS, AudioSettings, DataSpec

__all__ = ["REPRESENTATIONS", "AudioFeatures", "AudioSettings", "spectrogram_images", "write_wavs"]

#: Griffin-Lim iterations when turning a log-mel spectrogram into sound.
GRIFFIN_LIM_ITERATIONS = 32


class AudioFeatures(nn.Module):
    """Log-mel features of waveform batches, computed where the batch is (GPU or CPU), and back.

    Buffers are not persistent: they are rebuilt from the spec, never stored in weights.
    """

    def __init__(self, settings: AudioSettings) -> None:
        super().__init__()
        import librosa

        self.settings = settings
        s = settings
        mel = librosa.filters.mel(sr=s.sample_rate, n_fft=s.n_fft, n_mels=s.n_mels)
        self.register_buffer("mel_basis", torch.from_numpy(mel), persistent=False)
        self.register_buffer("window", torch.hann_window(s.n_fft), persistent=False)
        mean = torch.tensor(s.mel_mean or [0.0] * s.n_mels)[:, None]
        std = torch.tensor(s.mel_std or [1.0] * s.n_mels)[:, None]
        self.register_buffer("mel_mean", mean, persistent=False)
        self.register_buffer("mel_std", std, persistent=False)

    @classmethod
    def of(cls, spec: DataSpec) -> AudioFeatures:
        return cls(AudioSettings.of(spec))

    def mel_power(self, wave: Tensor) -> Tensor:
        """``[B, L] -> [B, n_mels, frames]`` mel power spectrogram (librosa's ``melspectrogram``
        with ``center=True, pad_mode="constant"``)."""
        s = self.settings
        stft = torch.stft(
            wave.float(),
            s.n_fft,
            s.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return self.mel_basis @ stft.abs().square()

    def mel_db(self, wave: Tensor) -> Tensor:
        """``[B, L] -> [B, n_mels, frames]`` log-mel power in dB, floored at ``min_db``."""
        floor = 10.0 ** (self.settings.min_db / 10.0)
        return 10.0 * torch.log10(self.mel_power(wave).clamp_min(floor))

    def logmel(self, wave: Tensor) -> Tensor:
        """``[B, L] -> [B, 1, n_mels, frames]``: the normalised features a ``logmel`` model reads."""
        return ((self.mel_db(wave) - self.mel_mean) / self.mel_std)[:, None]

    def model_input(self, wave: Tensor) -> Tensor:
        """``[B, L]`` clips -> what a model of these settings reads: ``[B, 1, L]`` for ``waveform``,
        the normalised log-mel ``[B, 1, n_mels, frames]`` for ``logmel``."""
        return self.logmel(wave) if self.settings.representation == "logmel" else wave[:, None]

    def db_of(self, x: Tensor) -> Tensor:
        """Log-mel dB ``[B, n_mels, frames]`` of model-space examples of either representation."""
        if self.settings.representation == "logmel":
            return x[:, 0].float() * self.mel_std + self.mel_mean
        return self.mel_db(x[:, 0])

    def distances(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """Per example ``[B, 2]``: mel L1 distance (mean absolute dB difference) and spectral
        convergence ``||S - S_hat||_F / ||S||_F`` of the mel magnitudes, input vs reconstruction."""
        db, db_hat = self.db_of(x), self.db_of(x_hat)
        l1 = (db - db_hat).abs().mean((1, 2))
        magnitude, magnitude_hat = 10.0 ** (db / 20.0), 10.0 ** (db_hat / 20.0)
        convergence = (magnitude - magnitude_hat).flatten(1).norm(dim=1) / magnitude.flatten(1).norm(dim=1)
        return torch.stack([l1, convergence], 1)

    def to_audio(self, x: Tensor) -> np.ndarray:
        """Model-space examples ``[B, *event_shape]`` as waveforms ``[B, num_samples]`` in [-1, 1]:
        the signal itself, or, for log-mel, Griffin-Lim on the mel spectrogram (librosa)."""
        s = self.settings
        if s.representation == "waveform":
            return x[:, 0].detach().float().clamp(-1, 1).cpu().numpy()
        import librosa

        power = (10.0 ** (self.db_of(x) / 10.0)).detach().cpu().numpy()
        wave = librosa.feature.inverse.mel_to_audio(
            power,
            sr=s.sample_rate,
            n_fft=s.n_fft,
            hop_length=s.hop_length,
            center=True,
            pad_mode="constant",
            n_iter=GRIFFIN_LIM_ITERATIONS,
            length=s.num_samples,
        )
        return np.clip(wave, -1.0, 1.0).astype(np.float32)


def band_statistics(db_chunks: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
    """Per mel band mean and standard deviation (floored at 0.01 dB) of log-mel dB chunks
    ``[b, n_mels, frames]``, summed in float64 so a stream of chunks gives what one tensor would."""
    count, total, squares = 0, 0.0, 0.0
    for db in db_chunks:
        db = db.double()
        count += db.shape[0] * db.shape[2]
        total = total + db.sum((0, 2))
        squares = squares + db.square().sum((0, 2))
    mean = total / count
    std = ((squares - count * mean.square()) / (count - 1)).clamp_min(0).sqrt()
    return mean.float(), std.clamp_min(1e-2).float()


def spectrogram_images(features: AudioFeatures, x: Tensor) -> Tensor:
    """Log-mel spectrograms of model-space examples as grey images ``[B, 1, n_mels, frames]`` in
    [0, 1] (low frequencies at the bottom; ``min_db`` black, the loudest bin shown white)."""
    db = features.db_of(x).detach().float()
    floor = features.settings.min_db
    images = (db - floor) / (db.max() - floor).clamp_min(1e-6)
    return images.clamp(0, 1).flip(-2)[:, None].cpu()


def write_wavs(folder: Path, clips: dict[str, np.ndarray], sample_rate: int) -> list[Path]:
    """Each ``name -> [L]`` clip as ``folder/name.wav`` (16-bit PCM); returns the files."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, clip in clips.items():
        files.append(folder / f"{name}.wav")
        soundfile.write(files[-1], clip, sample_rate, subtype="PCM_16")
    return files
