"""``genkit``: one command line for everything but training and evaluation (``genkit-train``,
``genkit-eval``): the registry (``genkit list``), sweep tables (``genkit compare``) and tools
for trained models.

Each command is a module of ``genkit.cli`` named in ``COMMANDS``. A command given as
``module:Options`` takes ``key=value`` words checked against that dataclass (its docstring is
the usage line) and runs ``module.run(options)``; a command given as a module alone has
``HELP``, ``add_arguments(parser)`` and ``main(args)``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass
from types import ModuleType

from genkit.cli.process import console_script
from genkit.cli.trained import parse
from genkit.console import be_quiet
from genkit.errors import GenkitError, UsageError
from genkit.training.folder import as_write_error

#: Command -> the module of ``genkit.cli`` that holds it, and the dataclass of its ``key=value`` options.
COMMANDS = {
    "list": "listing",
    "prepare": "prepare",
    "compare": "compare:CompareOptions",
    "sample": "sample:SampleOptions",
    "reconstruct": "reconstruct:ReconstructOptions",
    "interpolate": "interpolate:InterpolateOptions",
    "denoise": "denoise:DenoiseOptions",
    "latent-map": "latent_map:LatentMapOptions",
    "anomaly": "anomaly:AnomalyOptions",
    "export": "export:ExportOptions",
}


@dataclass(frozen=True)
class Command:
    """A command's module and, for a ``key=value`` command, the dataclass of its options."""

    module: ModuleType
    options: type | None

    @classmethod
    def named(cls, name: str) -> Command:
        module, _, options = COMMANDS[name].partition(":")
        found = importlib.import_module(f"genkit.cli.{module}")
        return cls(found, getattr(found, options) if options else None)

    @property
    def usage(self) -> str:
        return self.options.__doc__ if self.options else self.module.HELP


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``genkit``."""
    parser = argparse.ArgumentParser(prog="genkit", description="genkit: composable VAEs. Train with genkit-train.")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", help="only the result, warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        command = Command.named(name)
        subparser = commands.add_parser(name, help=command.usage, description=command.usage, parents=[quiet])
        if command.options:
            subparser.add_argument("options", nargs="*", metavar="KEY=VALUE")
        else:
            command.module.add_arguments(subparser)
    args = parser.parse_args(argv)
    command = Command.named(args.command)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # dependencies: their warnings
    logging.getLogger("genkit").setLevel(logging.INFO)
    try:
        if command.options is None:
            if args.quiet:
                be_quiet()
            command.module.main(args)
            return 0
        words = [w if "=" in w else f"path={w}" for w in args.options]  # genkit compare DIR
        options = parse(command.options, words)
        if args.quiet or not getattr(options, "verbose", True):
            be_quiet()
        result = command.module.run(options)
        if isinstance(result, str):
            sys.stdout.write(result)
    except UsageError as error:
        sys.stderr.write(f"genkit: {error}. Usage: {command.usage}\n")
        return 2
    except GenkitError as error:
        sys.stderr.write(f"genkit: {error}\n")
        return 2
    except OSError as error:  # an output the disk or the folder refuses: said in one line, after any results
        if (refused := as_write_error(error)) is None:
            raise
        sys.stderr.write(f"genkit: {refused}\n")
        return 1
    return 0


def script() -> None:
    """The ``genkit`` console script: ``main``, then a quick exit (``genkit.cli.process``)."""
    console_script(main)


if __name__ == "__main__":
    script()
