"""One home for configuration: genkit's ``conf/`` folder, the config nodes generated from
signatures, the search path that adds plugins' ``conf/`` folders, and composing a config as
the command line would.

Registered classes get their node from their constructor's signature (hydra-zen's
``builds``), stored under their kind's group, so config and code cannot drift. YAML
under ``conf/`` holds only presets that extend a generated node under another name, and
experiments.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig, OmegaConf

from genkit import plugins


def config_dir() -> Path:
    """genkit's own ``conf/``: inside the installed package (wheel) or the source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"genkit's conf/ folder is missing next to {here}; reinstall genkit")


def generated_node(cls: type, name: str, exclude: Iterable[str] = ()) -> Any:
    """A dataclass config node for ``cls`` from its signature, without the ``exclude``d (wired) arguments.

    It is a partial (``_partial_: true``): genkit calls it with the wiring arguments."""
    from hydra_zen import builds

    return builds(
        cls,
        populate_full_signature=True,
        zen_partial=True,
        zen_exclude=sorted(exclude),
        zen_dataclass={"cls_name": name},
    )


def store(group: str | None, name: str, node: Any, provider: str = "genkit") -> None:
    """Put ``node`` in Hydra's ConfigStore as option ``name`` of ``group`` (None: a primary config)."""
    ConfigStore.instance().store(group=group, name=name, node=node, provider=provider)


class GenkitSearchPathPlugin(SearchPathPlugin):
    """Appends the ``conf/`` folders that plugin packages ship."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for provider, path in plugins.CONFIG_SOURCES:
            search_path.append(provider=provider, path=path)


def folder(path: str) -> str:
    """``${genkit.folder:PATH}`` in a config: PATH, created if missing (for files opened before
    Hydra creates the run folders, such as the Optuna study's SQLite database)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return str(Path(path).resolve())


def prepare(plugin_modules: Sequence[str] = ()) -> None:
    """Everything Hydra needs before it composes genkit's configs: every part registered (built-ins,
    installed plugins, the local ``plugin_modules``), plugins' ``conf/`` folders on the search path
    and genkit's resolvers. Idempotent; every launcher job and DDP rank runs it again."""
    plugins.load(list(plugin_modules))
    Plugins.instance().register(GenkitSearchPathPlugin)  # by class name: repeating it is harmless
    OmegaConf.register_new_resolver("genkit.folder", folder, replace=True)


def presets(group: str) -> set[str]:
    """YAML option names of a config group in genkit's conf/ and in plugins' conf/ folders."""
    folders = [config_dir() / group]
    folders += [Path(path.removeprefix("file://")) / group for _, path in plugins.CONFIG_SOURCES]
    return {p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")}


def train_config(overrides: Sequence[str] = (), plugin_modules: Sequence[str] = ()) -> DictConfig:
    """genkit-train's config with ``overrides``, composed as the command line would (no run started)."""
    from hydra import compose, initialize_config_dir

    prepare(plugin_modules)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides))


#: The largest seed: numpy's generators, which Lightning seeds too, take 32-bit seeds.
MAX_SEED = 2**32 - 1


def check_run_options(cfg: DictConfig) -> None:
    """Refuse genkit-train's own top-level options (those no part owns) with values it cannot use,
    before anything is seeded or built; a sweep checks every job's before any starts.

    Raises:
        UsageError: naming the option, the value and what it takes.
    """
    from genkit.errors import UsageError

    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    for flag in ("verbose", "overwrite"):
        if not isinstance(cfg.get(flag), bool):
            raise UsageError(f"{flag} must be true or false, got {cfg.get(flag)!r}")
    plugin_modules = cfg.get("plugins")
    if plugin_modules is not None and not (
        isinstance(plugin_modules, Sequence) and all(isinstance(m, str) for m in plugin_modules)
    ):
        raise UsageError(f"plugins must be a list of module names, e.g. plugins=[my_parts], got {plugin_modules!r}")
    backend = cfg.get("compile")
    if backend is not None:
        import torch._dynamo

        if backend not in torch._dynamo.list_backends(exclude_tags=()):
            raise UsageError(
                f"compile={backend!r} is not a torch.compile backend; use one of "
                f"{', '.join(torch._dynamo.list_backends())} (or eager to debug), or null for no compiling"
            )
