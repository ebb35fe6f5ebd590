"""Where modules of genkit 0.1 moved, so that old import paths keep working and class paths that old
checkpoints and configs name (``genkit.encoders.MLPEncoder``) find their classes where they are now.

``import genkit.encoders`` is answered with ``genkit.parts.encoders`` by a finder on
``sys.meta_path``; a module whose contents went to several places (``genkit.sequences``) is
answered with a module holding the public names of all of them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

#: Old module -> the module(s) its public names live in now.
MOVED: dict[str, tuple[str, ...]] = {
    "genkit.encoders": ("genkit.parts.encoders",),
    "genkit.decoders": ("genkit.parts.decoders",),
    "genkit.posteriors": ("genkit.parts.posteriors",),
    "genkit.priors": ("genkit.parts.priors",),
    "genkit.likelihoods": ("genkit.parts.likelihoods",),
    "genkit.sequences": ("genkit.parts.encoders", "genkit.parts.decoders", "genkit.parts.layers"),
    "genkit.contract": ("genkit.parts.base",),
    "genkit.train": ("genkit.training.run",),
    "genkit.callbacks": ("genkit.training.callbacks",),
    "genkit.tracking": ("genkit.training.tracking",),
    "genkit.resume": ("genkit.training.resume",),
    "genkit.evaluate": ("genkit.training.metrics",),
}


def legacy_targets(target: str) -> list[str]:
    """Where the class at an old path ``module.Class`` may be now (nothing for a current path)."""
    module, _, name = target.rpartition(".")
    return [f"{new}.{name}" for new in MOVED.get(module, ())]


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers imports of the old module paths in ``MOVED`` with the modules that hold their names now."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        homes = [importlib.import_module(name) for name in MOVED[spec.name]]
        if len(homes) == 1:
            return homes[0]
        merged = types.ModuleType(spec.name, f"genkit 0.1's {spec.name}: now in {', '.join(MOVED[spec.name])}")
        for home in homes:
            merged.__dict__.update({k: v for k, v in vars(home).items() if not k.startswith("_")})
        return merged

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the module's home was executed by its own import."""


def moved_module(name: str) -> types.ModuleType:
    """``genkit.<name>`` for a module that moved, imported on first use (the package's ``__getattr__``)."""
    if f"genkit.{name}" not in MOVED:
        raise AttributeError(f"module 'genkit' has no attribute {name!r}")
    return importlib.import_module(f"genkit.{name}")


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
