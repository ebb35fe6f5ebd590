"""What every genkit Hydra app shares: plugins loaded and part names checked before Hydra
composes (local plugins must be registered first; typos get a did-you-mean), and genkit's
own errors turned into one clean line (in a sweep the job is marked failed, the rest run).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from genkit import plugins
from genkit.errors import GenkitError, UnknownPartError, WiringError
from genkit.parts import WIRING
from genkit.registry import KINDS, registry, unknown_name_message

log = logging.getLogger("genkit")


class JobFailed(CompactHydraException):
    """A job stopped by a GenkitError; Hydra prints its message without a traceback."""


def parse_overrides(argv: list[str]) -> list:
    """Hydra overrides among ``argv`` (flags and unparsable words are left to Hydra)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            parsed.extend(parser.parse_overrides([arg]))
        except Exception:  # Hydra reports its own syntax errors
            continue
    return parsed


def override_values(override) -> list[str]:  # noqa: ANN001
    """The plain string values of an override (every choice of a sweep)."""
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()] if override.is_choice_sweep() else []
    value = override.value()
    return [value] if isinstance(value, str) else []


def presets(group: str) -> set[str]:
    """YAML option names of a config group in genkit's conf/ and in plugins' conf/ folders."""
    folders = [plugins.config_dir() / group]
    folders += [Path(path.removeprefix("file://")) / group for _, path in plugins.CONFIG_SOURCES]
    return {p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")}


def check_overrides(overrides: list) -> None:
    """Refuse unknown part names (with a did-you-mean) and hand-set wiring values."""
    for override in overrides:
        key = override.key_or_group
        group, _, param = key.partition(".")
        if group in KINDS and param in WIRING:
            raise WiringError(
                f"{key} is wired by genkit; remove it"
                + (" and set model.latent_dim instead" if param == "latent_dim" else "")
            )
        if key in KINDS and not override.is_delete():
            known = set(registry(key).names()) | presets(key)
            for value in override_values(override):
                if value not in known:
                    choices = registry(key).choices() | {p: "preset" for p in presets(key) - set(registry(key).names())}
                    raise UnknownPartError(unknown_name_message(key, value, choices))


def local_plugin_modules(overrides: list) -> list[str]:
    """The modules named by a ``plugins=[...]`` override, read before Hydra composes."""
    for override in overrides:
        if override.key_or_group == "plugins":
            value = override.value()
            return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return []


def clean_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Wrap a Hydra task so a GenkitError ends the job with one logged line and no traceback."""

    def wrapped(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except GenkitError as error:
            log.error("%s", error)
            raise JobFailed(f"genkit: {error}") from None

    return wrapped


def folder(path: str) -> str:
    """``${genkit.folder:PATH}`` in a config: PATH, created if missing (for files opened before
    Hydra creates the run folders, such as the Optuna study's SQLite database)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return str(Path(path).resolve())


def run(task: Callable[[DictConfig], Any], config_name: str) -> None:
    """Load plugins, check the command line, then hand over to Hydra with ``config_name``."""
    import hydra
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("genkit.folder", folder, replace=True)
    overrides = parse_overrides(sys.argv[1:])
    try:
        plugins.load(local_plugin_modules(overrides))
        check_overrides(overrides)
    except GenkitError as error:
        sys.stderr.write(f"genkit: {error}\n")
        sys.exit(2)
    hydra.main(version_base="1.3", config_path=str(plugins.config_dir()), config_name=config_name)(clean_errors(task))()
