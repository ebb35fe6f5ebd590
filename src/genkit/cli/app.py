"""What every genkit Hydra app shares: its command line parsed once, plugins loaded and part
names checked before Hydra composes (local plugins must be registered first; typos get a
did-you-mean), and genkit's own errors turned into one clean line (in a sweep the job is
marked failed, the rest run).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from genkit import config
from genkit.errors import GenkitError, LoggerConfigError, UnknownPartError, WiringError
from genkit.registry import KINDS, registry, unknown_name_message
from genkit.training.folder import as_write_error, check_writable

log = logging.getLogger("genkit")


class JobFailed(CompactHydraException):
    """A job stopped by a GenkitError; Hydra prints its message without a traceback."""


#: Flags that mean ``verbose=false`` (only the summary, warnings and errors).
QUIET_FLAGS = ("-q", "--quiet")


def override_key(word: str) -> str:
    """``trainer.max_epochs`` of ``++trainer.max_epochs=3``; ``encoder`` of ``encoder=conv``."""
    return word.split("=", 1)[0].lstrip("+~")


@dataclass(frozen=True)
class CommandLine:
    """A Hydra app's command line, parsed once.

    Attributes:
        program: ``argv[0]``.
        flags: Hydra's flags and their values (``-m``, ``--cfg job``), in order.
        words: the ``key=value`` overrides, as typed.
        overrides: those Hydra can parse, as Hydra's ``Override`` objects (the others are left to
            Hydra, which reports its own syntax errors).
    """

    program: str
    flags: tuple[str, ...]
    words: tuple[str, ...]
    overrides: tuple[Any, ...]

    @classmethod
    def parse(cls, argv: list[str]) -> CommandLine:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        flags = tuple(a for a in argv[1:] if (a.startswith("-") or "=" not in a) and a not in QUIET_FLAGS)
        words = tuple(a for a in argv[1:] if "=" in a and not a.startswith("-"))
        if any(a in QUIET_FLAGS for a in argv[1:]):
            words += ("verbose=false",)
        parser = OverridesParser.create()
        overrides = []
        for word in words:
            try:
                overrides.extend(parser.parse_overrides([word]))
            except Exception:  # Hydra reports its own syntax errors
                continue
        return cls(argv[0], flags, words, tuple(overrides))

    @property
    def argv(self) -> list[str]:
        return [self.program, *self.flags, *self.words]

    @property
    def multirun(self) -> bool:
        return "-m" in self.flags or "--multirun" in self.flags

    def value(self, key: str) -> str | None:
        """The value of the last override of ``key`` as typed (None: not given)."""
        values = [w.split("=", 1)[1] for w in self.words if override_key(w) == key]
        return values[-1] if values else None

    def plugin_modules(self) -> list[str]:
        """The modules named by a ``plugins=[...]`` override, read before Hydra composes."""
        for override in self.overrides:
            if override.key_or_group == "plugins":
                value = override.value()
                return [str(v) for v in value] if isinstance(value, list) else [str(value)]
        return []

    def check(self) -> None:
        """Refuse unknown part names (with a did-you-mean), hand-set wiring values and W&B settings
        without W&B."""
        logger = self.value("logger")
        for override in self.overrides:
            if logger in ("csv", "none") and override.key_or_group.startswith("logger.wandb."):
                raise LoggerConfigError(
                    f"{override.key_or_group} needs logger=wandb: logger={logger} starts no W&B run "
                    f"(log_model keeps checkpoints in W&B); drop {override.key_or_group} or use logger=wandb"
                )
            key = override.key_or_group
            group, _, param = key.partition(".")
            if group in KINDS and param in KINDS[group].wiring:
                raise WiringError(
                    f"{key} is wired by genkit; remove it"
                    + (" and set model.latent_dim instead" if param == "latent_dim" else "")
                )
            if key in KINDS and not override.is_delete():
                names = set(registry(key).names())
                presets = config.presets(key) - names
                for value in choice_values(override):
                    if value not in names | presets:
                        choices = registry(key).choices() | dict.fromkeys(presets, "preset")
                        raise UnknownPartError(unknown_name_message(key, value, choices))


def choice_values(override: Any) -> list[str]:
    """The plain string values of an override (every choice of a sweep)."""
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()] if override.is_choice_sweep() else []
    value = override.value()
    return [value] if isinstance(value, str) else []


def clean_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Wrap a Hydra task so a GenkitError ends the job with one logged line and no traceback."""

    def wrapped(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except (GenkitError, OSError) as error:
            if not isinstance(error, GenkitError) and (error := as_write_error(error)) is None:
                raise
            log.error("%s", error)
            raise JobFailed(f"genkit: {error}") from None

    return wrapped


def refuse(error: GenkitError) -> NoReturn:
    """End a command that was refused before it started: one line on stderr, exit code 2."""
    sys.stderr.write(f"genkit: {error}\n")
    sys.exit(2)


def run_folder(command_line: CommandLine) -> Path:
    """The folder Hydra creates for the command's run (or sweep), or the one it creates it under."""
    named = command_line.value("hydra.sweep.dir" if command_line.multirun else "hydra.run.dir")
    return Path(named or command_line.value("paths.log_dir") or os.environ.get("GENKIT_LOG_DIR", "outputs"))


def run(task: Callable[[DictConfig], Any], config_name: str, command_line: CommandLine) -> None:
    """Load plugins, check the command line, then hand over to Hydra with ``config_name``."""
    import hydra

    try:
        config.prepare(command_line.plugin_modules())
        command_line.check()
        check_writable(run_folder(command_line))
    except GenkitError as error:
        refuse(error)
    sys.argv = command_line.argv
    hydra.main(version_base="1.3", config_path=str(config.config_dir()), config_name=config_name)(clean_errors(task))()
