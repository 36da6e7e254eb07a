"""`geospot data shards`: write a manifest as img2dataset-style tar shards.

Exit status: 0 success; 1 written, but some images were left out (each listed
on stderr); 2 bad arguments or unusable input (nothing written).
"""
from __future__ import annotations

import sys


def register(data_sub) -> None:
    p = data_sub.add_parser(
        "shards", help="pack a manifest's images into WebDataset/img2dataset tar shards",
        description="Write NNNNN.tar shards (KEY.jpg + KEY.json with lat/lon/location_id and the other columns), "
                    "NNNNN.parquet beside each, and OUT/dataset.shards.json naming them all. The result is "
                    "accepted wherever a manifest is (geospot embed/train/eval OUT/dataset.shards.json).")
    p.add_argument("manifest", help="manifest CSV/Parquet (or shards to re-pack)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the shards")
    p.add_argument("--per-shard", type=int, default=10_000, metavar="N", help="images per shard (default 10000)")
    p.add_argument("--split", metavar="NAME", help="only rows whose `split` column equals NAME")
    p.set_defaults(func=_cmd_shards)


def _cmd_shards(args) -> int:
    from geospot.cli.options import read_manifest_or_exit
    from geospot.data.shards_write import write_shards

    if args.per_shard < 1:
        print(f"error: --per-shard must be >= 1, got {args.per_shard}", file=sys.stderr)
        return 2
    manifest = read_manifest_or_exit(args.manifest, args.split)
    try:
        result = write_shards(manifest, args.out, per_shard=args.per_shard)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in result.errors:
        print(f"error: {line}", file=sys.stderr)
    print(f"{result.written} images in {len(result.shards)} shards -> {args.out} (descriptor: {result.descriptor})")
    return 1 if result.errors or manifest.problems else 0
