"""``DataSpec``: everything the other parts may know about the data.

A data module builds its spec before any part exists; genkit wires shapes from it,
and the spec travels in every checkpoint so a model loads without its data. What a
modality adds (class names, a vocabulary, audio settings) are typed fields, so every
reader finds them by name and a checkpoint stores them as plain data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from math import prod
from typing import Any

MODALITIES = ("image", "text", "audio")
SUPPORTS = ("binary", "unit_interval", "real", "categorical")
REPRESENTATIONS = ("logmel", "waveform")


@dataclass(frozen=True)
class Vocabulary:
    """The tokens of text data: the fitted tokenizer (JSON of the ``tokenizers`` library) and the
    special ids every sequence part needs.

    Attributes:
        tokenizer: the tokenizer as JSON (empty when a data module brings only ids).
        vocab_size: number of token ids.
        pad, bos, eos, unk: ids of padding, beginning and end of sentence, unknown word.
    """

    tokenizer: str
    vocab_size: int
    pad: int
    bos: int
    eos: int
    unk: int

    @classmethod
    def of(cls, spec: DataSpec) -> Vocabulary:
        """The vocabulary of a text spec; a clear error for any other."""
        if spec.vocabulary is None:
            raise ValueError(f"the data is {spec.describe()}, which has no vocabulary (token ids)")
        return spec.vocabulary


@dataclass(frozen=True)
class AudioSettings:
    """What a waveform or log-mel example is: the settings genkit's audio data module decodes and
    computes features with, and that a reloaded model needs to turn its outputs into sound.

    Attributes:
        sample_rate: samples per second of the (resampled) audio.
        num_samples: samples per clip after cropping/padding.
        representation: ``logmel`` (x is the normalised log-mel spectrogram ``[1, n_mels, frames]``)
            or ``waveform`` (x is the signal in [-1, 1], ``[1, num_samples]``).
        n_fft, hop_length, n_mels: STFT window and hop in samples, mel bands (Slaney mel scale,
            as librosa's defaults).
        min_db: floor of the log-mel power in dB (silence and padding sit there).
        mel_mean, mel_std: per-band mean and standard deviation of the training split's
            log-mel dB values (the normalisation of ``logmel`` inputs); empty for ``waveform``.
    """

    sample_rate: int
    num_samples: int
    representation: str = "logmel"
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 64
    min_db: float = -80.0
    mel_mean: tuple[float, ...] = ()
    mel_std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "mel_mean", tuple(self.mel_mean))
        object.__setattr__(self, "mel_std", tuple(self.mel_std))

    @property
    def frames(self) -> int:
        """STFT frames of one clip (centred frames, as librosa and ``torch.stft(center=True)``)."""
        return 1 + self.num_samples // self.hop_length

    def event_shape(self) -> tuple[int, ...]:
        if self.representation == "logmel":
            return (1, self.n_mels, self.frames)
        return (1, self.num_samples)

    def spec(self, classes: tuple[str, ...] = ()) -> DataSpec:
        """The spec of clips with these settings."""
        return DataSpec("audio", self.event_shape(), "real", classes=classes, audio=self)

    @classmethod
    def of(cls, spec: DataSpec) -> AudioSettings:
        """The audio settings of a spec made by genkit's audio data module; a clear error for any other."""
        if spec.audio is None:
            raise ValueError(f"the data is {spec.describe()}, which has no audio settings")
        return spec.audio


#: Keys of ``extra`` under which genkit 0.1 kept what are now typed fields (read from old checkpoints
#: and from plugin data modules written for 0.1, and mirrored in ``extra`` for plugin parts that read them).
VOCABULARY_KEYS = {"vocab_size": "vocab_size", "pad_id": "pad", "bos_id": "bos", "eos_id": "eos", "unk_id": "unk"}


@dataclass(frozen=True)
class DataSpec:
    """What one example looks like.

    Attributes:
        modality: ``image`` | ``text`` | ``audio``.
        event_shape: shape of one example without the batch: ``(C, H, W)`` for images.
        support: value range of ``x``: ``binary`` ({0, 1}), ``unit_interval`` ([0, 1]),
            ``real``, or ``categorical`` (integer ids).
        variable_length: batches carry a ``mask`` ``[B, T]`` (True = real element).
        classes: the names of the labels ``y``, in index order (empty: unnamed or unlabelled).
        vocabulary: the tokens of text data.
        audio: the decoding and feature settings of audio data.
        extra: anything else a data module wants its parts to know (plain data, stored in checkpoints).
            For parts written for genkit 0.1 it also shows the vocabulary under its old keys
            (``vocab_size``, ``pad_id``, ``bos_id``, ``eos_id``, ``unk_id``, ``tokenizer``).
    """

    modality: str
    event_shape: tuple[int, ...]
    support: str
    variable_length: bool = False
    classes: tuple[str, ...] = ()
    vocabulary: Vocabulary | None = None
    audio: AudioSettings | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.support not in SUPPORTS:
            raise ValueError(f"support must be one of {SUPPORTS}, got {self.support!r}")
        extra = dict(self.extra)
        vocabulary, audio, classes = self.vocabulary, self.audio, tuple(self.classes)
        if vocabulary is None and "vocab_size" in extra:  # a 0.1 spec: ids (and tokenizer) in extra
            ids = {name: int(extra[key]) for key, name in VOCABULARY_KEYS.items()}
            vocabulary = Vocabulary(tokenizer=extra.get("tokenizer", ""), **ids)
        if audio is None and isinstance(extra.get("audio"), dict):
            audio = AudioSettings(**extra.pop("audio"))
        if not classes and "classes" in extra:
            classes = tuple(extra.pop("classes"))
        if isinstance(audio, dict):
            audio = AudioSettings(**audio)
        if isinstance(vocabulary, dict):
            vocabulary = Vocabulary(**vocabulary)
        if vocabulary is not None:
            extra.update({key: getattr(vocabulary, name) for key, name in VOCABULARY_KEYS.items()})
            extra["tokenizer"] = vocabulary.tokenizer
        object.__setattr__(self, "event_shape", tuple(int(d) for d in self.event_shape))
        object.__setattr__(self, "classes", tuple(str(c) for c in classes))
        object.__setattr__(self, "vocabulary", vocabulary)
        object.__setattr__(self, "audio", audio)
        object.__setattr__(self, "extra", extra)

    @property
    def numel(self) -> int:
        """Number of scalar elements in one example (the 'dim' of bits/dim)."""
        return prod(self.event_shape)

    def describe(self) -> str:
        """Short human form, e.g. ``image [1, 28, 28] unit_interval``."""
        return f"{self.modality} {list(self.event_shape)} {self.support}"

    def differences(self, other: DataSpec) -> list[str]:
        """What makes ``other`` data of another kind for a model of this spec: its modality, shape,
        support, vocabulary or audio settings (class names and ``extra`` may differ), one phrase each."""
        found = []
        for name in ("modality", "event_shape", "support"):
            if getattr(self, name) != getattr(other, name):
                found.append(f"{name} {getattr(other, name)!r} (the model's: {getattr(self, name)!r})")
        if self.vocabulary != other.vocabulary:
            found.append("another vocabulary (its tokenizer is fitted on the training split)")
        if self.audio != other.audio:
            mine, theirs = asdict(self.audio or AudioSettings(0, 0)), asdict(other.audio or AudioSettings(0, 0))
            changed = [key for key in mine if mine[key] != theirs[key]]
            found.append(f"other audio settings ({', '.join(changed)})")
        return found

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form stored in checkpoints (loads with ``weights_only=True``)."""
        mirrored = {*VOCABULARY_KEYS, "tokenizer"} if self.vocabulary is not None else set()
        return {
            "modality": self.modality,
            "event_shape": list(self.event_shape),
            "support": self.support,
            "variable_length": self.variable_length,
            "classes": list(self.classes),
            "vocabulary": asdict(self.vocabulary) if self.vocabulary is not None else None,
            "audio": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.audio).items()}
            if self.audio is not None
            else None,
            "extra": {k: v for k, v in self.extra.items() if k not in mirrored},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        """The spec ``to_dict`` stored, or one a checkpoint of genkit 0.1 stored (typed fields in ``extra``)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
