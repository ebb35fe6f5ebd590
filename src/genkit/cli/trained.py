"""What every command on a trained model shares (``genkit-eval``, ``genkit sample``, ``reconstruct``,
``interpolate``, ``denoise``, ``latent-map``, ``anomaly``): their common options, the checks of
those options, and a checkpoint opened with the data it was trained on.

Options are ``key=value`` words checked against typed dataclasses (OmegaConf structured
configs), so an unknown option or a wrong type is refused with the key named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from genkit.checkpoint import local_checkpoint, model_from_checkpoint, read_checkpoint
from genkit.compose import build_data
from genkit.errors import DataError, UsageError
from genkit.modalities import Modality, modality_of
from genkit.training.metrics import SPLITS
from genkit.wandb_models import is_reference


@dataclass
class CheckpointOptions:
    """Options of every command on a trained model."""

    ckpt: str = MISSING  # the checkpoint
    seed: int = 0  # seeds the command's random draws
    out: str = ""  # where to write; default: beside the checkpoint, named after it and the command
    verbose: bool = True  # false (or -q): only the result, warnings and errors


@dataclass
class SplitOptions(CheckpointOptions):
    """Options of the commands that read a split of the data the model was trained on."""

    split: str = "test"  # train | val | test
    data: dict[str, Any] = field(default_factory=dict)  # changes to the checkpoint's data config (data.KEY=VALUE)


def parse(schema: type, words: list[str]) -> Any:
    """``key=value`` words merged onto ``schema``; mistakes become a UsageError naming the key."""
    try:
        options = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(words))
        OmegaConf.to_container(options, throw_on_missing=True)
    except OmegaConfBaseException as error:
        raise UsageError(str(error).splitlines()[0]) from None
    return options


def flat_changes(changes: dict | DictConfig) -> list[tuple[str, Any]]:
    """``data.*`` changes as (dotted key, value) pairs, as they were given on the command line."""
    plain = OmegaConf.to_container(changes) if isinstance(changes, DictConfig) else changes
    return [(f"data.{key}", value) for key, value in plain.items()]


def check_split(split: str) -> None:
    """Refuse a split name that data modules do not have."""
    if split not in SPLITS:
        raise UsageError(f"split must be train, val or test, got {split!r}")


def check_count(name: str, value: int, meaning: str) -> None:
    """Refuse a count below 1, saying what it counts."""
    if value < 1:
        raise UsageError(f"{name} must be at least 1 ({meaning}), got {value}")


@dataclass
class Trained:
    """A checkpoint opened for a command: the model (eval mode, on the CPU) and its run config."""

    path: Path  # the local file (for a wandb: reference, the downloaded one)
    model: Any
    config: DictConfig
    source: str  # the checkpoint as the user named it: the file's full path, or the wandb: reference

    @classmethod
    def open(cls, ckpt: str) -> Trained:
        """Read ``ckpt`` (a path or a ``wandb:`` reference) safely and rebuild its model (``genkit.checkpoint``).

        Raises:
            CheckpointError: the file is missing, unreadable or not a genkit checkpoint, or the
                reference cannot be fetched from W&B.
        """
        path = local_checkpoint(ckpt)
        checkpoint, run_cfg = read_checkpoint(path)
        source = ckpt if is_reference(ckpt) else str(path.resolve())
        return cls(path, model_from_checkpoint(checkpoint, run_cfg, ckpt), run_cfg, source)

    def modality(self, command: str) -> Modality:
        """The model's modality, or a UsageError for data whose examples genkit cannot write."""
        modality = modality_of(self.model.spec)
        if modality is None:
            raise UsageError(
                f"genkit {command} writes images, text or audio made by genkit's data modules; "
                f"this model is for {self.model.spec.describe()}: use it from Python (genkit.load)"
            )
        return modality

    def data(self, changes: dict | DictConfig, seed: int | None = None) -> tuple[Any, str]:
        """The data module the model was trained with (``changes`` applied; ``seed``: instead of the
        run's), set up and checked against the model's spec, and its registry name.

        Raises:
            DataError: the data gives examples of another shape or another vocabulary.
        """
        run_cfg = self.config.copy()
        run_cfg.data = OmegaConf.merge(run_cfg.data, changes)
        if seed is not None:
            run_cfg.seed = seed
        datamodule, data_name = build_data(run_cfg)
        differences = self.model.spec.differences(datamodule.spec)
        if differences:
            given = "".join(f" {key}={value}" for key, value in flat_changes(changes))
            raise DataError(
                f"data {data_name!r}{' with' + given if given else ''} is not the data the model was trained on: "
                f"it has {'; '.join(differences)}; point data.* at the data it was trained on"
            )
        datamodule.setup()
        return datamodule, data_name

    def output(self, out: str, name: str, suffix: str = ".png") -> Path:
        """``out``, or ``<checkpoint stem>.<name><suffix>`` beside the checkpoint (for a ``wandb:``
        reference, in the current folder, named after the artifact version); its folder made.

        Raises:
            UsageError: ``out`` does not end in ``suffix`` (the kind of file the command writes).
        """
        if out and suffix and Path(out).suffix.lower() != suffix:
            raise UsageError(f"out={out}: this command writes a {suffix} file here; give a path ending in {suffix}")
        if out and not suffix and Path(out).suffix:
            raise UsageError(f"out={out}: this command writes a folder of files here; give a folder, not a file name")
        beside = Path(self.path.parent.name) if is_reference(self.source) else self.path
        path = Path(out) if out else beside.with_name(f"{beside.stem}.{name}{suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
