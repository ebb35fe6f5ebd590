"""``genkit list``: every registered part, data module and model, with its origin, parameters and class.

genkit's own classes are listed from ``builtins.json``, written from the registry by
``python -m genkit.cli.listing`` (a test keeps the two equal), so that listing them needs
neither torch nor Lightning; with plugins to load, or ``--check``, the registry itself is listed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from genkit import plugins
from genkit.registry import KINDS, PLURALS, Entry, list_parts

HELP = "show registered parts with their origin and parameters"
#: ``genkit list encoders`` and ``genkit list encoder`` both work.
KIND_BY_WORD = {**{k: k for k in KINDS}, **{v: k for k, v in PLURALS.items()}}
#: genkit's own registered classes, by kind, as ``Row`` fields.
BUILTINS_MANIFEST = Path(__file__).with_name("builtins.json")


@dataclass(frozen=True)
class Row:
    """One registered class as ``genkit list`` shows it."""

    name: str
    target: str
    parameters: dict[str, Any]
    origin: str = "genkit"
    overrides: str | None = None

    @classmethod
    def of(cls, entry: Entry) -> Row:
        return cls(entry.name, entry.target, entry.parameters(), entry.origin, entry.overrides)

    def line(self) -> str:
        origin = self.origin + (f", overrides {self.overrides}" if self.overrides else "")
        params = ", ".join(f"{name}={value!r}" for name, value in self.parameters.items())
        return f"  {self.name:<14} [{origin}]  {params}  ({self.target})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", choices=sorted(KIND_BY_WORD), help="only this kind")
    parser.add_argument("--filter", default="*", help="fnmatch pattern on names, e.g. 'conv*'")
    parser.add_argument("--plugins", default="", help="comma-separated local plugin modules to load first")
    parser.add_argument(
        "--check", action="store_true", help="build every model part into a model and check its contract"
    )


def main(args: argparse.Namespace) -> None:
    kind = KIND_BY_WORD.get(args.kind) if args.kind else None
    modules = [m for m in args.plugins.split(",") if m]
    if args.check or plugins.beyond_builtins(modules):
        plugins.load(modules)
        sys.stdout.write(listing(kind, args.filter, args.check))
    else:
        sys.stdout.write(builtins_listing(kind, args.filter))


def listing(kind: str | None, pattern: str, check: bool = False) -> str:
    """Every registered class (of one kind) with origin and parameters, plus broken plugins.

    With ``check``, every model part is also built into a model and probed against its
    contract (``genkit.testing.probe_part``), and the verdict is shown under it.
    """
    from genkit.testing import probe_part

    rows = {k: [Row.of(entry) for entry in list_parts(k, pattern)] for k in kinds(kind)}
    verdicts = {}
    for k in [k for k in rows if check and KINDS[k].part]:
        for row in rows[k]:
            status, detail = probe_part(k, row.name)
            verdicts[k, row.name] = f"{status}: {detail}" if status != "ok" else f"ok (built on {detail})"
    lines = rendered(rows, verdicts)
    if plugins.BROKEN:
        lines.append("broken plugins (skipped):")
        lines += [f"  {b.distribution} ({b.module}): {b.error}" for b in plugins.BROKEN]
    return "\n".join(lines).rstrip() + "\n"


def builtins_listing(kind: str | None, pattern: str) -> str:
    """``listing`` of genkit's own classes, read from the manifest."""
    manifest = json.loads(BUILTINS_MANIFEST.read_text())
    rows = {
        k: [Row(**fields) for fields in manifest[k] if fnmatch.fnmatch(fields["name"], pattern)] for k in kinds(kind)
    }
    return "\n".join(rendered(rows)).rstrip() + "\n"


def kinds(kind: str | None) -> list[str]:
    return [kind] if kind else list(KINDS)


def rendered(rows: dict[str, list[Row]], verdicts: dict[tuple[str, str], str] | None = None) -> list[str]:
    """The listing's lines: each kind's heading, its rows, and each row's ``--check`` verdict."""
    lines = []
    for kind, kind_rows in rows.items():
        lines.append(f"{PLURALS[kind]}:")
        if not kind_rows:
            lines.append("  (none)")
        for row in kind_rows:
            lines.append(row.line())
            if verdicts and (kind, row.name) in verdicts:
                lines.append(f"  {'':<14} {verdicts[kind, row.name]}")
        lines.append("")
    return lines


def write_manifest() -> None:
    """Write ``BUILTINS_MANIFEST`` from the registry holding genkit's own classes only."""
    manifest = {}
    for kind in KINDS:
        rows = [Row.of(entry) for entry in list_parts(kind)]
        if strangers := [row.target for row in rows if row.origin != "genkit"]:
            raise RuntimeError(f"the manifest lists genkit's own classes only; loaded beside them: {strangers}")
        manifest[kind] = [
            {k: v for k, v in asdict(row).items() if k in ("name", "target", "parameters")} for row in rows
        ]
    BUILTINS_MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    write_manifest()
