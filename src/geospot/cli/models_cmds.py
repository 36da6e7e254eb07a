"""`geospot models`: list the downloadable pretrained models and encoders, or download one (explicitly)."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("models", help="list downloadable pretrained models (size, licence, cached?) or download one")
    p.add_argument("--download", metavar="NAME", help="download NAME into $GEOSPOT_CACHE (network; resumable)")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    from geospot.models.catalog import catalogue_rows, download_or_exit

    if args.download:
        return download_or_exit(args.download)
    rows = catalogue_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = "cached" if r["cached"] else "not downloaded"
        print(f"{r['name']:14s} {r['size']:>15s}  {state:15s} licence: {r['licence']}")
        print(f"{'':14s} {r['what']}")
        print(f"{'':14s} use: {r['use']}; folder: {r['folder']}")
        if r["note"]:
            print(f"{'':14s} note: {r['note']}")
    print("\nDownload one with: geospot models --download NAME (nothing is ever downloaded implicitly)")
    return 0
