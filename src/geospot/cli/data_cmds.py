"""`geospot data ...`: build, import, check and split geolocation datasets.

Collectors (`streetview`, `mapillary`) live in `data_collect`; sampling,
importers, checks and splits in `data_prep`.
"""
from __future__ import annotations

import importlib


def register(sub) -> None:
    parser = sub.add_parser("data", help="build, import, check and split datasets")
    data_sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    for name in ("data_prep", "data_collect", "data_shards"):
        try:
            module = importlib.import_module(f"geospot.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"geospot.cli.{name}":
                raise
            continue
        module.register(data_sub)
