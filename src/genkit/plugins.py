"""Discovery, in one idempotent function: genkit's own parts, installed plugins and local modules.

Installed plugins declare an entry point in the group ``genkit.plugins`` whose value is
a module; importing it registers its parts. A plugin package that ships ``conf/``
(presets, experiments) has it recorded here; ``genkit.config`` appends it to Hydra's
search path, so plugin authors never write Hydra plugins. Every launcher job and DDP
rank calls ``load`` again (Hydra restores its ConfigStore in workers, not genkit's registry).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from genkit.errors import PluginLoadError

ENTRY_POINT_GROUP = "genkit.plugins"
#: Comma-separated local plugin modules, the environment twin of ``plugins=[...]``.
PLUGINS_ENV = "GENKIT_PLUGINS"
#: Set to 1 to skip installed plugins (as pytest's PYTEST_DISABLE_PLUGIN_AUTOLOAD).
DISABLE_AUTOLOAD_ENV = "GENKIT_DISABLE_PLUGIN_AUTOLOAD"


@dataclass(frozen=True)
class BrokenPlugin:
    """An installed plugin whose import failed: shown by ``genkit list``, never fatal."""

    distribution: str
    module: str
    error: str


#: The packages whose import registers genkit's own parts, data modules and model, in ``KINDS``
#: order; imported when a registry is first looked up, not with ``import genkit`` (which stays light).
BUILTINS = ("genkit.parts", "genkit.data", "genkit.model")

BROKEN: list[BrokenPlugin] = []
LOADED: dict[str, str] = {}  # module -> distribution (or 'local')
#: (provider, search-path entry) pairs appended to Hydra's search path.
CONFIG_SOURCES: list[tuple[str, str]] = []


def local_modules(argv_modules: list[str] | None = None) -> list[str]:
    """Modules named by ``plugins=[...]`` plus ``$GENKIT_PLUGINS`` (in that order, deduplicated)."""
    env = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    return list(dict.fromkeys([*(argv_modules or []), *env]))


def load(modules: list[str] | tuple[str, ...] = ()) -> None:
    """Make every part available: genkit's own, installed plugins, then local ``modules``.

    Raises:
        PluginLoadError: a local module the user asked for cannot be imported.
    """
    load_builtins()
    if os.environ.get(DISABLE_AUTOLOAD_ENV) != "1":
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            load_entry_point(ep)
    for module in local_modules(list(modules)):
        load_local(module)


def beyond_builtins(modules: list[str] | tuple[str, ...] = ()) -> bool:
    """Whether ``load(modules)`` would import anything but genkit's own parts: local modules or
    installed plugins (``genkit list`` reads genkit's own from a manifest when it would not)."""
    installed = os.environ.get(DISABLE_AUTOLOAD_ENV) != "1" and bool(entry_points(group=ENTRY_POINT_GROUP))
    return installed or bool(local_modules(list(modules)))


def load_builtins() -> None:
    """Register genkit's own classes (each import registers once; later calls are lookups)."""
    for package in BUILTINS:
        importlib.import_module(package)


def load_entry_point(ep) -> None:  # noqa: ANN001 (importlib.metadata.EntryPoint)
    dist = ep.dist.name if ep.dist is not None else ep.name
    if ep.value in LOADED or any(b.module == ep.value for b in BROKEN):
        return
    try:
        module = importlib.import_module(ep.value)
    except Exception as error:  # a broken plugin must never stop genkit
        BROKEN.append(BrokenPlugin(dist, ep.value, f"{error.__class__.__name__}: {error}"))
        warnings.warn(
            f"genkit plugin {dist!r} (module {ep.value}) failed to import and is skipped: "
            f"{error.__class__.__name__}: {error}. Upgrade or uninstall it; everything else works.",
            stacklevel=2,
        )
        return
    LOADED[ep.value] = dist
    add_config_source(module, dist)


def load_local(module_name: str) -> None:
    """Import a local plugin module from the working directory or ``sys.path``."""
    if module_name in LOADED:
        return
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # console scripts do not put the cwd on sys.path
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise PluginLoadError(
            f"local plugin module {module_name!r} could not be imported: {error.__class__.__name__}: {error}. "
            f"It must be importable from the working directory or sys.path ({', '.join(sys.path[:4])}, ...)."
        ) from error
    LOADED[module_name] = "local"
    add_config_source(module, f"local:{module_name}")


def add_config_source(module, provider: str) -> None:  # noqa: ANN001
    """Record a plugin's ``conf/`` folder (next to its top-level package) for the search path."""
    top = module.__name__.split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return
    for location in spec.submodule_search_locations:
        if (Path(location) / "conf").is_dir():
            source = (provider, f"file://{Path(location) / 'conf'}")
            if source not in CONFIG_SOURCES:
                CONFIG_SOURCES.append(source)
