"""``genkit list``: every registered part, data module and model, with its origin, parameters and class."""

from __future__ import annotations

import argparse
import sys

from genkit import plugins
from genkit.registry import KINDS, PLURALS, list_parts

HELP = "show registered parts with their origin and parameters"
#: ``genkit list encoders`` and ``genkit list encoder`` both work.
KIND_BY_WORD = {**{k: k for k in KINDS}, **{v: k for k, v in PLURALS.items()}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", choices=sorted(KIND_BY_WORD), help="only this kind")
    parser.add_argument("--filter", default="*", help="fnmatch pattern on names, e.g. 'conv*'")
    parser.add_argument("--plugins", default="", help="comma-separated local plugin modules to load first")
    parser.add_argument(
        "--check", action="store_true", help="build every model part into a model and check its contract"
    )


def main(args: argparse.Namespace) -> None:
    plugins.load([m for m in args.plugins.split(",") if m])
    sys.stdout.write(listing(KIND_BY_WORD.get(args.kind) if args.kind else None, args.filter, args.check))


def listing(kind: str | None, pattern: str, check: bool = False) -> str:
    """Every registered class (of one kind) with origin and parameters, plus broken plugins.

    With ``check``, every model part is also built into a model and probed against its
    contract (``genkit.testing.probe_part``), and the verdict is shown under it.
    """
    from genkit.testing import probe_part

    lines = []
    for k in [kind] if kind else list(KINDS):
        entries = list_parts(k, pattern)
        lines.append(f"{PLURALS[k]}:")
        if not entries:
            lines.append("  (none)")
        for entry in entries:
            origin = entry.origin + (f", overrides {entry.overrides}" if entry.overrides else "")
            params = ", ".join(f"{name}={value!r}" for name, value in entry.parameters().items())
            lines.append(f"  {entry.name:<14} [{origin}]  {params}  ({entry.target})")
            if check and KINDS[k].part:
                status, detail = probe_part(k, entry.name)
                lines.append(
                    f"  {'':<14} {status}: {detail}" if status != "ok" else f"  {'':<14} ok (built on {detail})"
                )
        lines.append("")
    if plugins.BROKEN:
        lines.append("broken plugins (skipped):")
        lines += [f"  {b.distribution} ({b.module}): {b.error}" for b in plugins.BROKEN]
    return "\n".join(lines).rstrip() + "\n"
