"""``genkit prepare``: decode a data set once into compressed shards that ``data=shards`` streams.

Takes the data options exactly as ``genkit-train`` does (``data=NAME data.KEY=VALUE``, ``plugins=``)
and its own ``out=``, ``workers=`` and ``overwrite=``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

from omegaconf import MISSING

from genkit import config
from genkit.cli.app import CommandLine, override_key
from genkit.cli.trained import parse
from genkit.compose import build_data
from genkit.errors import UsageError

HELP = (
    "decode a data set once into compressed shards for data=shards: "
    "genkit prepare data=NAME [data.KEY=VALUE ...] out=DIR [workers=N] [overwrite=true]"
)
#: Words of the command line that choose and configure the data, as genkit-train reads them.
DATA_KEYS = ("data", "plugins")


@dataclass
class PrepareOptions:
    out: str = MISSING  # the folder the shards are written to
    workers: int = 0  # decoding processes (0: one per core)
    overwrite: bool = False  # replace another data set prepared in out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("words", nargs="*", metavar="KEY=VALUE")


def main(args: argparse.Namespace) -> None:
    from genkit.data.shards import prepare

    logging.getLogger("litdata").setLevel(logging.WARNING)  # its INFO lines size the writer's cache: not for the user
    data_words = [w for w in args.words if override_key(w).split(".")[0] in DATA_KEYS]
    options = parse(PrepareOptions, [w for w in args.words if w not in data_words])
    if options.workers < 0:
        raise UsageError(f"workers must be 0 (one per core) or more, got {options.workers}")
    command_line = CommandLine.parse(["genkit prepare", *data_words])
    config.prepare(command_line.plugin_modules())
    command_line.check()
    cfg = config.train_config(data_words, command_line.plugin_modules())
    datamodule, data_name = build_data(cfg)
    if data_name == "shards":
        raise UsageError("data=shards is prepared already; choose the data set to prepare (data=image_folder, ...)")
    prepare(datamodule.recipe(), options.out, options.workers, options.overwrite)
