"""Typed errors that speak the user's language.

Every error a user can cause by configuration or input is a ``GenkitError``: the
command-line entry points print it as one clean message (no traceback) and exit
non-zero, and tests pin its wording with ``pytest.raises(match=...)``.
"""

from __future__ import annotations


class GenkitError(Exception):
    """Base class of every user-facing genkit error."""


class UnknownPartError(GenkitError, KeyError):
    """A part name that no registry knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicatePartError(GenkitError):
    """A second registration under a name that is taken, without ``override=True``."""


class PartDefinitionError(GenkitError):
    """A class that cannot be registered as it is written (wrong base, bad signature)."""


class IncompatiblePartsError(GenkitError):
    """Two chosen parts that cannot work together (named together in the message)."""


class WiringError(GenkitError):
    """A user value for a shape that genkit wires between parts."""


class PartContractError(GenkitError):
    """A part whose outputs break its kind's contract (shapes, distribution types)."""


class PartConfigError(GenkitError):
    """A part's configuration value that its constructor refuses."""


class UsageError(GenkitError):
    """A command option with a value the command cannot use."""


class DataNotFoundError(GenkitError, FileNotFoundError):
    """Data files that are not where the configuration says."""


class DataError(GenkitError, ValueError):
    """Data that exists but cannot be used (empty, unreadable, wrong shape), or data options that do
    not fit it (found when the data is set up, after its module was built)."""


class PluginLoadError(GenkitError):
    """A local plugin module the user asked for that cannot be imported."""


class NonFiniteLossError(GenkitError):
    """Training produced a NaN or infinite loss."""


class CheckpointError(GenkitError):
    """A checkpoint that cannot be read or is not a genkit checkpoint."""


class ResumeError(GenkitError):
    """A run that cannot be continued as asked (no such run, a changed model, no readable checkpoint)."""


class TrainerConfigError(GenkitError):
    """Trainer settings Lightning cannot run on this machine (devices, accelerator, strategy, precision)."""


class SweepConfigError(GenkitError):
    """A job of a sweep cannot be composed; raised before any job starts."""


class LoggerConfigError(GenkitError):
    """Logger settings that cannot work (W&B options without W&B, an unknown ``log_model``)."""


class ExportError(GenkitError):
    """A part that cannot be exported as asked (it is not one graph, the format lacks an operator, the
    written graph disagrees with PyTorch, or the export extra is missing)."""


class RunFolderError(GenkitError):
    """A run folder that another running genkit run holds, or that holds another run's results."""


class WriteError(GenkitError):
    """A file that cannot be written: a full disk, a read-only or foreign folder. Nothing already on
    disk was changed."""
