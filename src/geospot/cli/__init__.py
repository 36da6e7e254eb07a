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

_VERB_MODULES = ("core", "data_cmds", "explain_cmds", "geotag_cmds", "models_cmds", "serve_cmd",
                 "scale_cmds", "methods_cmds", "album_cmds")  # these extend core's verbs: after it


def build_parser() -> argparse.ArgumentParser:
    from geospot.cli.errors import GeospotParser

    parser = GeospotParser(
        prog="geospot",
        description="Where was this photo taken? Train, evaluate and run photo-geolocation models offline.",
        epilog="Exit status: 0 success, 1 some inputs failed (each named on stderr), 2 usage or setup error, "
               "3 a collector's request budget ran out, 130 interrupted. See docs/errors.md.",
    )
    parser.add_argument("--version", action="version", version=f"geospot {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the full traceback of an error (accepted anywhere on the command line)")
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
    """Run one command; exit codes and the one-line error path: `geospot.cli.errors`."""
    import os

    from geospot.cli.errors import run_verb

    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is global but accepted anywhere before a bare `--` (users add it after the verb)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end] or os.environ.get("GEOSPOT_DEBUG", "") not in ("", "0")
    argv = [a for i, a in enumerate(argv) if not (a == "--debug" and i < end)]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return run_verb(args.func, args, debug=debug)
