"""Audio: a folder of recordings (wav, flac, ogg...) as fixed-length clips, log-mel or waveform.

Files are decoded once, by worker processes, with soundfile (libsndfile), mixed down to mono and
resampled with librosa (soxr), into 16-bit PCM clips; the clips are cached on disk, so a second run
decodes nothing, and held in memory, so no epoch decodes anything. Log-mel features are computed in
torch over batches of clips, and normalised per mel band with the training split's statistics, which
travel in the spec (and so in every checkpoint).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import replace
from functools import cached_property
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genkit.audio import AudioFeatures, band_statistics
from genkit.data.augment import Augment
from genkit.data.base import SPLIT_SEED, Example, InMemoryDataModule, Recipe, Split
from genkit.data.decoding import decode_in_memory, fill_cache
from genkit.errors import DataError, DataNotFoundError
from genkit.registry import register_data
from genkit.spec import REPRESENTATIONS, AudioSettings, DataSpec

log = logging.getLogger(__name__)

#: File suffixes treated as audio; those libsndfile cannot read are skipped with a warning.
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".m4a", ".aac"})
#: Clips turned into features per torch call (bounds the STFT's memory).
FEATURE_CHUNK = 256
#: Prepared clips are 16-bit PCM: the stored integer over this is the sample in [-1, 1).
PCM_SCALE = 32768


def audio_files(root: Path) -> list[Path]:
    """Every audio file under ``root`` (recursively), in a fixed order. Hidden files and folders below
    ``root`` are skipped; a hidden folder above it (``~/.cache/...``) is not."""
    files = [
        p
        for p in root.rglob("*")
        if p.suffix.lower() in AUDIO_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files)


def read_clip(path: Path, sample_rate: int, num_samples: int) -> tuple[np.ndarray | None, str]:
    """One file as a mono float32 clip of ``num_samples`` samples at ``sample_rate`` (cropped from
    the start or zero-padded at the end), and what was done or, with ``None``, why it was skipped."""
    import soundfile

    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except RuntimeError as error:  # soundfile.LibsndfileError: corrupt, or a format libsndfile cannot read
        reason = str(error).splitlines()[0].rpartition("': ")[2]  # libsndfile's text after "Error opening 'path'"
        return None, f"unreadable ({reason or type(error).__name__})"
    if len(data) == 0:
        return None, "empty (no samples)"
    done = []
    wave = data.mean(1)
    if data.shape[1] > 1:
        done.append("mixed down")
    if rate != sample_rate:
        import librosa

        wave = librosa.resample(wave, orig_sr=rate, target_sr=sample_rate)
        done.append("resampled")
    clip = np.zeros(num_samples, dtype=np.float32)
    clip[: min(num_samples, len(wave))] = wave[:num_samples]
    if not np.isfinite(clip).all():
        return None, "holds NaN or infinite samples"
    return clip, " and ".join(done)


@register_data("audio_folder")
class AudioFolder(InMemoryDataModule):
    """Every audio file under a folder (recursively), as clips of ``duration`` seconds.

    Splits: files whose path (relative to ``path``) matches the ``test_files`` / ``val_files``
    regular expressions, e.g. FSDD's official test takes ``_[0-4]\\.wav$``; without a pattern, a
    seeded ``test_fraction`` / ``val_fraction`` of the files (the same for every run seed).
    Unreadable, empty or corrupt files are skipped and counted with a warning naming them;
    files at another sample rate are resampled and multi-channel files mixed down.

    Args:
        path: the folder.
        representation: ``logmel`` (normalised log-mel spectrogram ``[1, n_mels, frames]``, for
            ``encoder=conv decoder=conv``) or ``waveform`` (``[1, samples]`` in [-1, 1], for
            ``encoder=conv1d decoder=conv1d``).
        sample_rate: rate every file is resampled to, in Hz.
        duration: clip length in seconds: longer files are cropped (from the start), shorter
            ones zero-padded at the end.
        n_fft, hop_length, n_mels: STFT window and hop (samples) and mel bands of ``logmel``.
        min_db: floor of the log-mel power in dB.
        test_files, val_files: regular expressions selecting the test/validation files by path.
        val_fraction, test_fraction: held-out shares when no pattern is given.
        label_pattern: a regular expression whose first group, searched in each file's path,
            is the file's label ``y`` (FSDD's digit: ``(\\d)_[a-z]+_\\d+\\.wav$``); empty: no labels.
        offset: seconds by which training clips may start later: each file is decoded that much
            longer, and every training batch cuts its clips at random starts in the first ``offset``
            seconds (seeded), computing their features then; evaluation cuts them at the start.
        cache_dir: where decoded clips are cached (empty: no cache).
        workers: processes decoding the files (0: one per core).
        batch_size: training batch size, in clips.
        eval_batch_size: validation/test batch size (0: 4x batch_size).
        seed: the run's seed (wired by genkit): batch order.
        on_device: keep the clips on the accelerator when they fit.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        path: str = "",
        representation: str = "logmel",
        sample_rate: int = 16000,
        duration: float = 1.0,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 64,
        min_db: float = -80.0,
        test_files: str = "",
        val_files: str = "",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        label_pattern: str = "",
        offset: float = 0.0,
        cache_dir: str = "~/.cache/genkit/data",
        workers: int = 0,
        batch_size: int = 64,
        eval_batch_size: int = 0,
        on_device: bool = True,
    ) -> None:
        super().__init__(seed, batch_size=batch_size, eval_batch_size=eval_batch_size, on_device=on_device)
        if representation not in REPRESENTATIONS:
            raise ValueError(f"data.representation must be one of {REPRESENTATIONS}, got {representation!r}")
        if sample_rate < 1 or duration <= 0:
            raise ValueError(f"data.sample_rate and data.duration must be positive, got {sample_rate} and {duration}")
        if hop_length < 1 or n_fft < 2 or n_mels < 1:
            raise ValueError("data.n_fft (>= 2), data.hop_length and data.n_mels (>= 1) must be positive")
        if workers < 0:
            raise ValueError(f"data.workers must be 0 (one per core) or more, got {workers}")
        if offset < 0:
            raise ValueError(f"data.offset must be 0 or more seconds, got {offset}")
        for name, pattern in (("test_files", test_files), ("val_files", val_files), ("label_pattern", label_pattern)):
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"data.{name} is not a regular expression ({error}): {pattern!r}") from None
        self.path = path
        self.settings = AudioSettings(
            sample_rate=sample_rate,
            num_samples=round(duration * sample_rate),
            representation=representation,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            min_db=min_db,
        )
        self.test_files, self.val_files, self.label_pattern = test_files, val_files, label_pattern
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.cache_dir = cache_dir
        self.workers = workers
        self.augment = Augment(offset=round(offset * sample_rate))

    def root(self) -> Path:
        if not self.path:
            raise DataNotFoundError("data.path is not set: give a folder of audio files (data.path=DIR)")
        root = Path(self.path).expanduser()
        if not root.is_dir():
            raise DataNotFoundError(f"data.path {root} is not a folder; give a folder of audio files (wav, flac, ogg)")
        return root

    @cached_property
    def files(self) -> list[Path]:
        """Every audio file under the data folder, in a fixed order (usable or not: the split of a file
        does not depend on whether others decode, so it is the same in memory and prepared)."""
        root = self.root()
        files = audio_files(root)
        if not files:
            raise DataNotFoundError(
                f"{root} has no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}); give a folder that holds some"
            )
        return files

    def names(self) -> list[str]:
        """Every file's path relative to the data folder."""
        root = self.root()
        return [file.relative_to(root).as_posix() for file in self.files]

    def assign_splits(self, names: list[str]) -> dict[str, list[int]]:
        """Indices of each split's files: by the path patterns, else by seeded fractions."""
        order = torch.randperm(len(names), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
        rest, splits, rules = order, {}, {}
        for split, pattern, share in (
            ("test", self.test_files, self.test_fraction),
            ("val", self.val_files, self.val_fraction),
        ):
            if pattern:
                splits[split] = [i for i in rest if re.search(pattern, names[i])]
                rules[split] = f"data.{split}_files={pattern!r}"
            else:
                splits[split] = rest[: round(len(names) * share)]
                rules[split] = f"data.{split}_fraction={share}"
            taken = set(splits[split])
            rest = [i for i in rest if i not in taken]
        splits["train"], rules["train"] = rest, "what the test and val rules leave"
        for split, indices in splits.items():
            if not indices:
                raise DataError(
                    f"the {split} split of {self.path} is empty ({len(names)} files; {split} takes "
                    f"{rules[split]}); change the patterns or fractions, or add files"
                )
        return {split: sorted(indices) for split, indices in splits.items()}

    def labels(self, names: list[str]) -> tuple[torch.Tensor | None, list[str]]:
        """Each file's label index by ``label_pattern``, and the label names in index order."""
        if not self.label_pattern:
            return None, []
        found = [re.search(self.label_pattern, name) for name in names]
        missing = [name for name, match in zip(names, found) if not match or not match.groups()]
        if missing:
            raise DataError(
                f"data.label_pattern={self.label_pattern!r} finds no label (first group) in {len(missing)} file(s), "
                f"e.g. {missing[0]}; fix the pattern or set it empty"
            )
        values = [match.group(1) for match in found]
        classes = sorted(set(values), key=lambda v: (len(v), v))
        index = {value: i for i, value in enumerate(classes)}
        return torch.tensor([index[v] for v in values]), classes

    def recipe(self) -> Recipe:
        """Each file decoded in a worker process into a clip stored as 16-bit PCM (``x / 32768`` is
        the clip); features are computed per batch while streaming, normalised by the training
        split's log-mel statistics, which ``finish`` measures once the clips are stored."""
        root, files, names = self.root(), self.files, self.names()
        labels, classes = self.labels(names)
        settings = self.settings
        digest = hashlib.sha256(f"{settings} {self.test_files} {self.val_files} {self.label_pattern}".encode())
        digest.update(f" {self.augment.offset}".encode())
        stored_samples = settings.num_samples + self.augment.offset
        digest.update(f"{self.val_fraction} {self.test_fraction}".encode())
        for file, name in zip(files, names):
            stat = file.stat()
            digest.update(f"\n{name} {stat.st_size} {stat.st_mtime_ns}".encode())

        def decode(split: str, index: int) -> Example | str:
            clip, what = read_clip(files[index], settings.sample_rate, stored_samples)
            if clip is None:
                return what
            pcm = np.clip(np.round(clip * PCM_SCALE), -PCM_SCALE, PCM_SCALE - 1).astype(np.int16)
            return {"x": pcm} if labels is None else {"x": pcm, "y": int(labels[index])}

        def finish(train: Iterable[Example]) -> DataSpec:
            if settings.representation != "logmel":
                return settings.spec(classes=tuple(classes))
            features, clips = AudioFeatures(settings), (e["x"] for e in train)
            chunks = iter(lambda: list(islice(clips, FEATURE_CHUNK)), [])
            mean, std = band_statistics(
                features.mel_db(torch.from_numpy(np.stack(c)[:, : settings.num_samples]).float() / PCM_SCALE)
                for c in chunks
            )
            return replace(settings, mel_mean=mean.tolist(), mel_std=std.tolist()).spec(classes=tuple(classes))

        return Recipe(
            source=f"audio_folder {root.resolve()}",
            spec=settings.spec(classes=tuple(classes)),
            items=self.assign_splits(names),
            decode=decode,
            fingerprint=digest.hexdigest(),
            scale=float(PCM_SCALE),
            describe=lambda index: names[index],
            finish=finish,
        )

    @cached_property
    def corpus(self) -> tuple[DataSpec, dict[str, Split]]:
        """The spec (with the training split's log-mel statistics) and every split's examples: log-mel
        features, or the 16-bit clips themselves for ``waveform`` (divided by 32768 per batch)."""
        recipe = self.recipe()
        stored = decode_in_memory(recipe, self.cache_dir, self.workers)
        spec = recipe.finish({"x": clip} for clip in stored["train"]["x"].numpy())
        features = AudioFeatures(spec.audio)
        splits = {}
        for split, examples in stored.items():
            clips = examples["x"]
            if self.augment.offset:  # cut and turned into features per batch (model_batch)
                x = clips
            elif spec.audio.representation == "logmel":
                x = torch.cat([features.model_input(c.float() / PCM_SCALE) for c in clips.split(FEATURE_CHUNK)])
            else:
                x = clips[:, None]
            splits[split] = {**examples, "x": x}
        sizes = ", ".join(f"{split} {len(examples['x'])}" for split, examples in splits.items())
        log.info("%s: %s clips", self.path, sizes)
        return spec, splits

    @property
    def scale(self) -> float | None:
        """Clips are held as 16-bit PCM (waveforms, or clips cut per batch); log-mel features as the
        model reads them."""
        held_as_clips = self.settings.representation == "waveform" or self.augment.offset
        return float(PCM_SCALE) if held_as_clips else None

    @cached_property
    def features(self) -> AudioFeatures:
        return AudioFeatures.of(self.spec)

    def model_batch(self, batch: dict[str, Tensor], generator: torch.Generator | None) -> dict[str, Tensor]:
        if self.augment.offset:
            batch = {**batch, "x": clip_features(self.features, batch["x"], self.augment, generator)}
        return super().model_batch(batch, generator)

    def prepare_data(self) -> None:
        """Decode into the cache once per machine (Lightning runs this on one process per node)."""
        fill_cache(self.recipe(), self.cache_dir, self.workers)

    @property
    def spec(self) -> DataSpec:
        return self.corpus[0]

    @classmethod
    def probe_spec(cls) -> DataSpec:
        """The default settings' spec, without statistics (the real one needs the files)."""
        return AudioSettings(sample_rate=16000, num_samples=16000).spec()

    def load_splits(self) -> dict[str, Split]:
        return self.corpus[1]


def clip_features(
    features: AudioFeatures, clips: Tensor, augment: Augment, generator: torch.Generator | None
) -> Tensor:
    """Stored clips ``[B, L]`` (in [-1, 1]) longer than a model's clip -> what the model reads: each cut
    at a random start (with a generator) or at the start, then turned into features where it is."""
    window = augment.window(clips, features.settings.num_samples, generator)
    return features.to(window.device).model_input(window)
