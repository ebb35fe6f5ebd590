"""Audio: a folder of recordings (wav, flac, ogg...) as fixed-length clips, log-mel or waveform.

Files are decoded once with soundfile (libsndfile), mixed down to mono and resampled with
librosa (soxr); the decoded clips are cached on disk, so a second run decodes nothing, and
held in memory, so no epoch decodes anything. Log-mel features are computed in torch over
batches of clips, and normalised per mel band with the training split's statistics, which
travel in the spec (and so in every checkpoint).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from functools import cached_property
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from genkit.audio import AudioFeatures, band_statistics
from genkit.data.base import SPLIT_SEED, Example, InMemoryDataModule, Recipe, Split
from genkit.errors import DataError, DataNotFoundError
from genkit.registry import register_data
from genkit.spec import REPRESENTATIONS, AudioSettings, DataSpec

log = logging.getLogger(__name__)

#: File suffixes treated as audio; those libsndfile cannot read are skipped with a warning.
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".m4a", ".aac"})
#: Clips turned into features per torch call (bounds the STFT's memory).
FEATURE_CHUNK = 256
CACHE_VERSION = 1
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
        return None, f"unreadable ({str(error).splitlines()[0] or type(error).__name__})"
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
        cache_dir: where decoded clips are cached (empty: no cache).
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
        cache_dir: str = "~/.cache/genkit/audio",
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

    def cache_file(self, root: Path, files: list[Path]) -> Path | None:
        """Where these files' decoded clips are cached: keyed by every file's path, size and
        modification time and by the clip settings, so any change decodes afresh."""
        if not self.cache_dir:
            return None
        key = hashlib.sha256(
            f"{CACHE_VERSION} {root.resolve()} {self.settings.sample_rate} {self.settings.num_samples}".encode()
        )
        for file in files:
            stat = file.stat()
            key.update(f"\n{file.relative_to(root)} {stat.st_size} {stat.st_mtime_ns}".encode())
        return Path(self.cache_dir).expanduser() / f"{key.hexdigest()[:24]}.pt"

    def decoded(self) -> tuple[list[str], torch.Tensor]:
        """Relative paths of the usable files and their clips ``[N, num_samples]`` (from the cache when there)."""
        root, files = self.root(), self.files
        cache = self.cache_file(root, files)
        if cache is not None and cache.exists():
            try:
                stored = torch.load(cache, weights_only=True)
                return stored["names"], stored["clips"]
            except Exception as error:  # a truncated or foreign file: decode again and rewrite it
                log.warning("ignoring the unreadable audio cache %s (%s); decoding the files again", cache, error)
        names, clips, skipped, changed = [], [], {}, Counter()
        for file in files:
            clip, what = read_clip(file, self.settings.sample_rate, self.settings.num_samples)
            if clip is None:
                skipped[str(file.relative_to(root))] = what
                continue
            names.append(str(file.relative_to(root).as_posix()))
            clips.append(clip)
            changed.update(what.split(" and ") if what else [])
        for name, why in list(skipped.items())[:10]:
            log.warning("skipped %s: %s", root / name, why)
        if skipped:
            log.warning("skipped %d of %d audio files under %s (see above)", len(skipped), len(files), root)
        if changed:
            log.info("%s", ", ".join(f"{what} {count} file(s)" for what, count in sorted(changed.items())))
        if not clips:
            raise DataError(f"none of the {len(files)} audio files under {root} could be used (see the warnings above)")
        stacked = torch.from_numpy(np.stack(clips))
        if cache is not None:
            self.store(cache, names, stacked)
        return names, stacked

    @staticmethod
    def store(cache: Path, names: list[str], clips: torch.Tensor) -> None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_suffix(f".{os.getpid()}.partial")  # DDP ranks may write at once
            torch.save({"names": names, "clips": clips}, partial)
            partial.replace(cache)
        except OSError as error:
            log.warning(
                "could not cache decoded audio in %s (%s); set data.cache_dir to a writable folder", cache, error
            )

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
        digest = hashlib.sha256(
            f"{CACHE_VERSION} {settings} {self.test_files} {self.val_files} {self.label_pattern}".encode()
        )
        digest.update(f"{self.val_fraction} {self.test_fraction}".encode())
        for file, name in zip(files, names):
            stat = file.stat()
            digest.update(f"\n{name} {stat.st_size} {stat.st_mtime_ns}".encode())

        def decode(split: str, index: int) -> Example | str:
            clip, what = read_clip(files[index], settings.sample_rate, settings.num_samples)
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
                features.mel_db(torch.from_numpy(np.stack(c)).float() / PCM_SCALE) for c in chunks
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
        """The spec (with the training split's log-mel statistics) and every split's examples."""
        everything = self.names()
        names, clips = self.decoded()
        row = {name: i for i, name in enumerate(names)}
        labels, classes = self.labels(everything)
        if labels is not None:  # the usable files' labels, row for row
            position = {name: i for i, name in enumerate(everything)}
            labels = labels[[position[name] for name in names]]
        indices = {  # each split's usable files, as rows of the clips
            split: [row[everything[i]] for i in index if everything[i] in row]
            for split, index in self.assign_splits(everything).items()
        }
        for split, index in indices.items():
            if not index:
                raise DataError(
                    f"none of the files of the {split} split of {self.path} could be used (see the warnings above)"
                )
        settings = self.settings
        features = clips[:, None]
        if settings.representation == "logmel":
            db = torch.cat([AudioFeatures(settings).mel_db(chunk) for chunk in clips.split(FEATURE_CHUNK)])
            mean, std = band_statistics([db[indices["train"]]])
            settings = replace(settings, mel_mean=mean.tolist(), mel_std=std.tolist())
            features = ((db - mean[:, None]) / std[:, None])[:, None]
        splits = {}
        for split, index in indices.items():
            splits[split] = {"x": features[index].contiguous()}
            if labels is not None:
                splits[split]["y"] = labels[index]
        sizes = ", ".join(f"{split} {len(index)}" for split, index in indices.items())
        log.info("%s: %d clips (%s)", self.path, len(names), sizes)
        return settings.spec(classes=tuple(classes)), splits

    @property
    def spec(self) -> DataSpec:
        return self.corpus[0]

    @classmethod
    def probe_spec(cls) -> DataSpec:
        """The default settings' spec, without statistics (the real one needs the files)."""
        return AudioSettings(sample_rate=16000, num_samples=16000).spec()

    def load_splits(self) -> dict[str, Split]:
        return self.corpus[1]
