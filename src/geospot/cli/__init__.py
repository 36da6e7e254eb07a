"""The `geospot` command: a thin layer of verbs over the library.

Each area registers its verbs from its own module so that they can grow
independently: `core` (cells, embed, train, locate, eval, cv, encoders),
`data_cmds` (`geospot data ...`), `explain_cmds` (explain, audit).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from geospot import __version__

_VERB_MODULES = ("core", "data_cmds", "explain_cmds", "scale_cmds")  # scale_cmds extends core's verbs: after it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geospot",
        description="Where was this photo taken? Train, evaluate and run photo-geolocation models offline.",
    )
    parser.add_argument("--version", action="version", version=f"geospot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _VERB_MODULES:
        try:
            module = importlib.import_module(f"geospot.cli.{name}")
        except ModuleNotFoundError as exc:  # an area not installed in this build
            if exc.name != f"geospot.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
