"""``genkit``: the registry (``genkit list``), sweep tables (``genkit compare``) and tools for trained
models (sample, reconstruct, ...)."""

from __future__ import annotations

import argparse
import logging
import sys

from genkit import compare, plugins, tools
from genkit.errors import GenkitError, UsageError
from genkit.registry import KINDS, PLURALS, list_parts

TOOLS = {
    "sample": tools.SampleOptions,
    "reconstruct": tools.ReconstructOptions,
    "interpolate": tools.InterpolateOptions,
    "denoise": tools.DenoiseOptions,
    "latent-map": tools.LatentMapOptions,
    "anomaly": tools.AnomalyOptions,
}
USAGE = {**{name: schema.__doc__ for name, schema in TOOLS.items()}, "compare": compare.CompareOptions.__doc__}
KIND_BY_WORD = {**{k: k for k in KINDS}, **{v: k for k, v in PLURALS.items()}}


def format_listing(kind: str | None, pattern: str, check: bool = False) -> str:
    """Every registered part (of one kind) with origin and parameters, plus broken plugins.

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
            lines.append(f"  {entry.name:<14} [{origin}]  {params}")
            if check and k != "data":
                status, detail = probe_part(k, entry.name)
                lines.append(
                    f"  {'':<14} {status}: {detail}" if status != "ok" else f"  {'':<14} ok (built on {detail})"
                )
        lines.append("")
    if plugins.BROKEN:
        lines.append("broken plugins (skipped):")
        lines += [f"  {b.distribution} ({b.module}): {b.error}" for b in plugins.BROKEN]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``genkit``."""
    parser = argparse.ArgumentParser(prog="genkit", description="genkit: composable VAEs. Train with genkit-train.")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="show registered parts with their origin and parameters")
    listing.add_argument("kind", nargs="?", choices=sorted(KIND_BY_WORD), help="only this kind")
    listing.add_argument("--filter", default="*", help="fnmatch pattern on names, e.g. 'conv*'")
    listing.add_argument("--plugins", default="", help="comma-separated local plugin modules to load first")
    listing.add_argument(
        "--check", action="store_true", help="build every model part into a model and check its contract"
    )
    for name, usage in USAGE.items():
        tool = commands.add_parser(name, help=usage, description=usage)
        tool.add_argument("options", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            plugins.load([m for m in args.plugins.split(",") if m])
            sys.stdout.write(
                format_listing(KIND_BY_WORD.get(args.kind) if args.kind else None, args.filter, args.check)
            )
        elif args.command == "compare":
            words = [w if "=" in w else f"path={w}" for w in args.options]  # genkit compare DIR
            sys.stdout.write(compare.compare(tools.parse(compare.CompareOptions, words)))
        else:
            logging.basicConfig(level=logging.INFO, format="%(message)s")
            getattr(tools, args.command.replace("-", "_"))(args.options)
    except UsageError as error:
        sys.stderr.write(f"genkit: {error}. Usage: {USAGE[args.command]}\n")
        return 2
    except GenkitError as error:
        sys.stderr.write(f"genkit: {error}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
