"""`geospot data sample|import|split|dedup|check`: prepare a dataset for training.

Exit status of every verb: 0 success; 1 done, but some inputs were rejected or
problems were found (each listed on stderr and in the side report); 2 bad
arguments or unusable input (nothing written).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geospot.cli import argtypes as t

_MAX_MESSAGES = 30  # per-item messages echoed on stderr; the side reports hold them all


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _echo_items(items: list[str], what: str, report: Path | None = None) -> None:
    for line in items[:_MAX_MESSAGES]:
        _err(f"  {line}")
    if len(items) > _MAX_MESSAGES:
        _err(f"  ... and {len(items) - _MAX_MESSAGES} more {what}" + (f" (all listed in {report})" if report else ""))


def _guard(func):
    """Turn expected user errors into one clear line on stderr and exit status 2."""
    def run(args) -> int:
        from geospot.data.importers import DatasetImportError
        from geospot.data.manifest import ManifestError

        try:
            return func(args)
        except ManifestError as exc:
            _err(f"error: {exc}")
            return 2
        except (DatasetImportError, ValueError, OSError) as exc:
            _err(f"error: {exc}")
            return 2
    return run


# ---------------------------------------------------------------- sample


def _cmd_sample(args) -> int:
    import warnings

    from geospot.data.sampling import SamplingWarning, sample_points

    cells = None
    if args.cells:
        from geospot.geo.cells import CellTable

        cells = CellTable.load(args.cells)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SamplingWarning)
        df = sample_points(args.region, n_per_cell=args.n_per_cell, n=args.n, cells=cells,
                           land_only=not args.include_sea, seed=args.seed, cell_km=args.cell_km, shape=args.grid)
    gave_up = [str(w.message) for w in caught if issubclass(w.category, SamplingWarning)]
    if gave_up:
        _err(f"warning: {len(gave_up)} cell(s) or region(s) with fewer points than asked:")
        _echo_items(gave_up, "warnings")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out, index=False, float_format="%.7f")
        _err(f"{len(df)} points in {df['cell'].nunique()} cells -> {args.out}")
    else:
        df.to_csv(sys.stdout, index=False, float_format="%.7f")
    return 0


# ---------------------------------------------------------------- import


def _cmd_import(args) -> int:
    from geospot.data.importers import import_csv, import_exif_folder, write_import

    if args.format == "exif":
        if args.map:
            raise ValueError("--map applies to CSV formats, not to exif")
        result = import_exif_folder(args.source, recursive=not args.no_recursive, verify=not args.no_verify,
                                    workers=args.workers, progress=not args.quiet)
    else:
        result = import_csv(args.source, args.format, images=args.images, column_map=args.map,
                            check_files=not args.no_check_files)
    manifest, report = write_import(result, args.out, args.report)
    if result.rejected:
        what = "files" if args.format == "exif" else "rows"
        _err(f"{len(result.rejected)} {what} not imported (listed in {report}):")
        _echo_items([(f"{args.source} row {r['row']}: " if "row" in r else f"{r['path']}: ") + r["reason"]
                     for r in result.rejected], what, report)
    if manifest is None:
        _err(f"error: nothing imported from {args.source}; no manifest written")
        return 2
    _err(f"{len(result.records)} images -> {manifest}")
    return 1 if result.rejected else 0


# ---------------------------------------------------------------- split


def _cmd_split(args) -> int:
    import numpy as np

    from geospot.data.manifest import read_manifest
    from geospot.data import splits

    if (args.test_fraction is None) == (args.folds is None):
        raise ValueError("give exactly one of --test-fraction F or --folds K")
    if args.buffer_km and (args.by != "spatial" or args.folds is not None):
        raise ValueError("--buffer-km needs --by spatial with --test-fraction")
    m = read_manifest(args.manifest, check_files=False)
    if args.by == "location":
        if args.group_column not in m.df.columns:
            raise ValueError(f"{args.manifest}: no column {args.group_column!r} to group by "
                             f"(columns: {', '.join(m.df.columns)})")
        groups = m.df[args.group_column].to_numpy(dtype=object)
        if args.folds is not None:
            folds = splits.group_kfold(groups, args.folds, args.seed)
        else:
            tr, te = splits.group_split(groups, args.test_fraction, args.seed)
    else:
        if args.level is None and args.cell_km is None:
            raise ValueError("--by spatial needs --level L (S2 level) or --cell-km KM")
        kw = dict(level=args.level, cell_km=args.cell_km, groups=m.groups)
        if args.folds is not None:
            folds = splits.spatial_block_kfold(m.lat, m.lon, args.folds, seed=args.seed, **kw)
        else:
            tr, te = splits.spatial_block_split(m.lat, m.lon, args.test_fraction, seed=args.seed,
                                                buffer_km=args.buffer_km, **kw)
    if args.folds is not None:
        labels = splits.fold_labels(len(m), folds)
        column = args.column or "fold"
        sizes = ", ".join(f"fold {k}: {len(te)}" for k, (_, te) in enumerate(folds))
        _err(f"{len(m)} rows in {args.folds} folds ({sizes})")
    else:
        labels = splits.split_labels(len(m), tr, te)
        column = args.column or "split"
        excluded = int((labels == "excluded").sum())
        _err(f"{len(m)} rows: train {len(tr)}, test {len(te)} ({len(te) / max(1, len(m)):.1%})"
             + (f", excluded {excluded} (within {args.buffer_km} km of test)" if excluded else ""))
    if column in m.df.columns:
        _err(f"note: replacing the existing {column!r} column")
    out = splits.write_split(m, np.asarray(labels), args.out, column=column)
    _err(f"-> {out}")
    return 0


# ---------------------------------------------------------------- dedup


def _dedup_inputs(args):
    """(paths, frame of per-image metadata or None, where the rows come from)."""
    from geospot.data.importers import PHOTO_EXTENSIONS
    from geospot.data.manifest import read_manifest

    src = Path(args.source)
    if src.is_dir():
        from geospot.data.scan import scan_folder

        found, skipped = scan_folder(src, extensions=PHOTO_EXTENSIONS)
        for path, reason in skipped:
            _err(f"warning: {path}: {reason}; skipped")
        paths = [str(Path(p).resolve()) for p in found]
        if not paths:
            raise ValueError(f"{src}: no image files found")
        return paths, None
    m = read_manifest(src, check_files=False)
    df = m.df.copy()
    df["row"] = m.row_numbers
    if args.assignment:
        a = read_manifest(args.assignment, check_files=False).df
        column = args.split_column or "split"
        if column not in a.columns:
            raise ValueError(f"{args.assignment}: no {column!r} column")
        df = df.drop(columns=[column], errors="ignore").merge(a[["path", column]].drop_duplicates("path"),
                                                             on="path", how="left")
    return df["path"].tolist(), df


def _cmd_dedup(args) -> int:
    from geospot.data import dedup

    paths, meta = _dedup_inputs(args)
    if args.hashes and Path(args.hashes).is_file() and not args.rehash:
        hashes = dedup.read_hashes(args.hashes)
        if hashes.paths != paths:
            raise ValueError(f"{args.hashes}: hashes are for other files; use --rehash to recompute them")
        _err(f"reusing hashes from {args.hashes}")
    else:
        hashes = dedup.hash_images(paths, workers=args.workers, progress=not args.quiet)
        if args.hashes:
            dedup.write_hashes(hashes, args.hashes)
    split = lat = lon = loc = None
    column = args.split_column or "split"
    if meta is not None:
        if column in meta.columns:
            split = meta[column].fillna("").to_numpy(dtype=object)
        elif args.split_column:
            raise ValueError(f"{args.source}: no {column!r} column")
        lat, lon, loc = meta["lat"].to_numpy(), meta["lon"].to_numpy(), meta["location_id"].to_numpy(dtype=object)
    pairs = dedup.find_duplicates(hashes, args.max_distance, args.method, split=split, lat=lat, lon=lon, location_id=loc)
    if meta is not None:
        rows = meta["row"].to_numpy()
        pairs.insert(0, "row_b", rows[pairs["b"].to_numpy()])
        pairs.insert(0, "row_a", rows[pairs["a"].to_numpy()])
    pairs = pairs.drop(columns=["a", "b"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pairs.to_csv(args.out, index=False)
    else:
        pairs.to_csv(sys.stdout, index=False)
    n_bad = int((~hashes.ok).sum())
    straddling = int(pairs["straddles"].sum()) if "straddles" in pairs.columns else None
    same_loc = int(pairs["same_location"].sum()) if "same_location" in pairs.columns else 0
    _err(f"{len(paths)} images, {int(hashes.ok.sum())} hashed; {len(pairs)} near-duplicate pairs "
         f"(within {args.max_distance} bits, {args.method})"
         + (f", {same_loc} of them views of one location" if same_loc else "")
         + (f"; {straddling} straddle {column} values (leaks)" if straddling is not None else "")
         + (f" -> {args.out}" if args.out else ""))
    if n_bad:
        _err(f"{n_bad} files could not be decoded:")
        _echo_items([f"{hashes.paths[k]}: {r}" for k, r in sorted(hashes.errors.items())], "files",
                    Path(args.hashes) if args.hashes else None)
    leak = bool(args.fail_on_leak and straddling)
    return 1 if (n_bad or leak) else 0


# ---------------------------------------------------------------- check


def _cmd_check(args) -> int:
    from geospot.data.check import check_dataset, report_json, report_markdown, write_check_report

    cells = None
    if args.cells:
        from geospot.geo.cells import CellTable

        cells = CellTable.load(args.cells)
    report = check_dataset(args.manifest, region=args.region, cells=cells, s2_level=args.s2_level,
                           decode=not args.no_decode, near_duplicates=args.near_duplicates,
                           dedup_max_distance=args.max_distance, spread_km=args.spread_km,
                           sea_tolerance_km=args.sea_tolerance_km, region_tolerance_km=args.region_tolerance_km,
                           workers=args.workers, progress=not args.quiet)
    if args.out:
        json_path, md_path = write_check_report(report, args.out)
        _err(f"report -> {json_path}, {md_path}")
    if args.json:
        print(report_json(report), end="")
    else:
        print(report_markdown(report), end="")
    issues = {k: v for k, v in report["summary"]["issues"].items() if v}
    if issues:
        _err("problems: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in issues.items()))
    return 0 if report["summary"]["ok"] else 1


# ---------------------------------------------------------------- parsers

_RAW = argparse.RawDescriptionHelpFormatter


def register(data_sub) -> None:
    """Add `sample`, `import`, `split`, `dedup` and `check` to the `geospot data` group."""
    p = data_sub.add_parser(
        "sample", help="random points over a region (uniform on the sphere, land only)", formatter_class=_RAW,
        description="Draw random points uniformly on the sphere inside a region: N in every grid cell "
                    "(--n-per-cell) or N over the whole region (--n). Land only by default.",
        epilog="examples:\n"
               "  geospot data sample Croatia --n-per-cell 5 --cell-km 50 --out points.csv\n"
               "  geospot data sample 45,5,48,12 --n 1000 --seed 1 > points.csv\n"
               "  geospot data sample world --n-per-cell 2 --cell-km 250 --grid square --out world.csv\n"
               "  geospot data sample area.geojson --n-per-cell 3 --cells model/ --out points.csv\n\n"
               "Output: CSV cell,lat,lon (the points of one cell on consecutive rows). A cell where no\n"
               "point could be found (almost all sea) is reported on stderr with the points found.")
    p.add_argument("region", help="country name or ISO code, 'lat_min,lon_min,lat_max,lon_max', a GeoJSON "
                                  "file, or 'world'")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--n-per-cell", type=t.positive_int, metavar="N", help="points in every cell")
    how.add_argument("--n", type=t.positive_int, metavar="N", help="points over the whole region")
    p.add_argument("--cell-km", type=t.positive_float, default=100.0, metavar="KM", help="grid cell edge (default: %(default)s)")
    p.add_argument("--grid", choices=("square", "hex"), default="square", help="grid cell shape (default: %(default)s)")
    p.add_argument("--cells", metavar="DIR", help="use the cells saved in DIR (cells.json) instead of a grid")
    p.add_argument("--include-sea", action="store_true", help="keep points at sea (default: land only)")
    p.add_argument("--seed", type=t.nonneg_int, default=0, help="random seed; same seed, same points (default: %(default)s)")
    p.add_argument("--out", metavar="CSV", help="output file (default: stdout)")
    p.set_defaults(func=_guard(_cmd_sample))

    p = data_sub.add_parser(
        "import", help="make a manifest from geotagged photos or a benchmark's CSV", formatter_class=_RAW,
        description="Import images and their coordinates into a geospot manifest (path,lat,lon,...).\n\n"
                    "formats:\n"
                    "  exif     a folder of photos (JPEG, HEIC/HEIF, TIFF, PNG, WebP), searched recursively;\n"
                    "           position from GPS EXIF, capture time from DateTimeOriginal\n"
                    "  im2gps   Im2GPS / Im2GPS3k: IMG_ID,AUTHOR,LAT,LON (or image_id,author,lat,lon)\n"
                    "  yfcc     YFCC4k / YFCC26k / MP-16 in the GeoEstimation layout: IMG_ID,AUTHOR,LAT,LON,...\n"
                    "  osv5m    OSV-5M: id,latitude,longitude,...,country,region,sub-region,city;\n"
                    "           images in images/{split}/ beside the CSV (split = CSV name) or --images\n"
                    "  geoclip  GeoCLIP: IMG_FILE,LAT,LON\n"
                    "  csv      any CSV, with --map path=COLUMN,lat=COLUMN,lon=COLUMN[,location_id=COLUMN]\n\n"
                    "Every other column is kept. Images are found by id under --images (as a relative path,\n"
                    "then by file name anywhere below it).",
        epilog="examples:\n"
               "  geospot data import exif ~/Pictures/trip --out trip/manifest.csv\n"
               "  geospot data import im2gps im2gps3k_places365.csv --images im2gps3k/ --out im2gps3k.csv\n"
               "  geospot data import osv5m osv5m/test.csv --out osv5m-test.csv\n"
               "  geospot data import csv photos.csv --map path=IMG,lat=LATITUDE,lon=LNG --out m.csv\n\n"
               "Files or rows that cannot be imported (no GPS, unreadable, bad coordinates, image not\n"
               "found) are listed on stderr and in the report (default: OUT with .rejected.csv); the\n"
               "manifest holds the others. Exit status 1 when anything was rejected.")
    p.add_argument("format", choices=("exif", "im2gps", "yfcc", "osv5m", "geoclip", "csv"), help="input format")
    p.add_argument("source", help="photo folder (exif) or CSV file")
    p.add_argument("--out", required=True, metavar="MANIFEST", help="manifest to write (.csv or .parquet)")
    p.add_argument("--images", metavar="DIR", help="image folder (CSV formats; default: beside the CSV)")
    p.add_argument("--map", metavar="FIELD=COLUMN,...", help="column mapping (format csv; adds fields for others)")
    p.add_argument("--report", metavar="CSV", help="where to list rejected files/rows (default: OUT.rejected.csv)")
    p.add_argument("--no-check-files", action="store_true",
                   help="keep rows whose image is absent (e.g. coordinates now, images later)")
    p.add_argument("--no-recursive", action="store_true", help="exif: do not descend into sub-folders")
    p.add_argument("--no-verify", action="store_true", help="exif: do not decode photos (faster, misses truncation)")
    p.add_argument("--workers", type=t.positive_int, default=2, help="reader threads (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_guard(_cmd_import))

    p = data_sub.add_parser(
        "split", help="leak-proof train/test split or K folds (by location or spatial block)", formatter_class=_RAW,
        description="Add a split (train/test) or fold (0..K-1) column to a manifest. Rows of one group\n"
                    "never straddle sides: --by location groups by a column (default location_id);\n"
                    "--by spatial groups by spatial blocks (S2 cells at --level, or a --cell-km grid), so\n"
                    "panoramas a few metres apart stay together. Folds are balanced by row count.",
        epilog="examples:\n"
               "  geospot data split m.csv --by location --test-fraction 0.2 --out m.split.csv\n"
               "  geospot data split m.csv --by location --folds 5 --out m.folds.csv\n"
               "  geospot data split m.csv --by spatial --level 8 --test-fraction 0.2 --out m.split.csv\n"
               "  geospot data split m.csv --by spatial --cell-km 25 --test-fraction 0.2 --buffer-km 5 --out s.csv\n\n"
               "S2 level L cells are about 9220 / 2^L km across (level 8: ~36 km, level 10: ~9 km).\n"
               "--buffer-km marks training rows that close to a test row as 'excluded'.")
    p.add_argument("manifest", help="manifest (CSV or Parquet)")
    p.add_argument("--out", required=True, metavar="MANIFEST", help="manifest to write with the new column")
    p.add_argument("--by", choices=("location", "spatial"), default="location", help="grouping (default: %(default)s)")
    p.add_argument("--group-column", default="location_id", metavar="COL",
                   help="--by location: column to group by (default: %(default)s)")
    p.add_argument("--level", type=t.int_range(0, 30), metavar="L", help="--by spatial: S2 level of the blocks")
    p.add_argument("--cell-km", type=t.positive_float, metavar="KM", help="--by spatial: block size of a square grid instead")
    p.add_argument("--buffer-km", type=t.nonneg_float, default=0.0, metavar="KM",
                   help="--by spatial: exclude training rows within KM of a test row")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--test-fraction", type=t.open_fraction, metavar="F", help="share of rows in test, e.g. 0.2")
    size.add_argument("--folds", type=t.int_range(2), metavar="K", help="K cross-validation folds")
    p.add_argument("--column", metavar="NAME", help="output column (default: split, or fold with --folds)")
    p.add_argument("--seed", type=t.nonneg_int, default=0, help="random seed (default: %(default)s)")
    p.set_defaults(func=_guard(_cmd_split))

    p = data_sub.add_parser(
        "dedup", help="near-duplicate images (perceptual hashes) and train/test leaks", formatter_class=_RAW,
        description="Hash every image (64-bit pHash and dHash) and list the pairs within --max-distance\n"
                    "bits, with the pairs whose split differs flagged as leaks (straddles=True). Works on a\n"
                    "manifest (row numbers, coordinates and distance_km between the two labels are added)\n"
                    "or on a folder of images.",
        epilog="examples:\n"
               "  geospot data dedup m.split.csv --out dups.csv --hashes hashes.csv\n"
               "  geospot data dedup m.csv --assignment m.split.csv --fail-on-leak > dups.csv\n"
               "  geospot data dedup photos/ --max-distance 2 --method both\n\n"
               "Output columns: row_a,row_b,path_a,path_b,phash_distance,dhash_distance[,split_a,split_b,\n"
               "straddles][,same_location][,distance_km]. pHash distances of 0-4 are re-encodes or\n"
               "resizes of one photo; similar-looking but different scenes start around 6-10.")
    p.add_argument("source", help="manifest (CSV/Parquet) or image folder")
    p.add_argument("--out", metavar="CSV", help="pairs file (default: stdout)")
    p.add_argument("--max-distance", type=t.int_range(0, 64), default=4, metavar="BITS", help="Hamming threshold (default: %(default)s)")
    p.add_argument("--method", choices=("phash", "dhash", "both"), default="phash",
                   help="hash to match on; both = pHash and dHash within the threshold (default: %(default)s)")
    p.add_argument("--split-column", metavar="COL", help="column with the split (default: split, when present)")
    p.add_argument("--assignment", metavar="MANIFEST", help="take the split column from this manifest (joined on path)")
    p.add_argument("--hashes", metavar="CSV", help="hash cache: read when it exists, else written")
    p.add_argument("--rehash", action="store_true", help="recompute hashes even when --hashes exists")
    p.add_argument("--fail-on-leak", action="store_true", help="exit 1 when a pair straddles splits")
    p.add_argument("--workers", type=t.positive_int, default=2, help="decoding threads (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_guard(_cmd_dedup))

    p = data_sub.add_parser(
        "check", help="report a dataset's contents and problems (Markdown/JSON)", formatter_class=_RAW,
        description="Decode every image and report: counts per country and per cell; invalid and duplicate\n"
                    "rows; missing and undecodable files; coordinates at (0, 0), at sea or outside --region;\n"
                    "locations whose views are more than --spread-km apart; optionally near-duplicates.",
        epilog="examples:\n"
               "  geospot data check m.csv\n"
               "  geospot data check m.csv --region Croatia --s2-level 8 --near-duplicates --out check/\n"
               "  geospot data check m.csv --no-decode --json | jq .summary\n\n"
               "Markdown goes to stdout (--json for JSON); --out DIR writes check.json and check.md.\n"
               "Exit status 1 when any problem is found.")
    p.add_argument("manifest", help="manifest (CSV or Parquet)")
    p.add_argument("--region", metavar="SPEC", help="flag rows outside this region (country, bbox, GeoJSON)")
    p.add_argument("--region-tolerance-km", type=t.nonneg_float, default=10.0, metavar="KM",
                   help="ignore rows this close to the region's (coarse) outline (default: %(default)s)")
    p.add_argument("--cells", metavar="DIR", help="count rows per cell of these cells (cells.json)")
    p.add_argument("--s2-level", type=t.int_range(0, 30), metavar="L", help="count rows per S2 cell of level L")
    p.add_argument("--no-decode", action="store_true", help="only check that files exist")
    p.add_argument("--near-duplicates", action="store_true", help="also hash images and list near-duplicates")
    p.add_argument("--max-distance", type=t.int_range(0, 64), default=4, metavar="BITS", help="near-duplicate threshold (default: %(default)s)")
    p.add_argument("--spread-km", type=t.nonneg_float, default=1.0, metavar="KM",
                   help="flag locations whose views are further apart (default: %(default)s)")
    p.add_argument("--sea-tolerance-km", type=t.nonneg_float, default=1.0, metavar="KM",
                   help="a row is at sea only when no land lies within KM (default: %(default)s)")
    p.add_argument("--out", metavar="DIR", help="also write check.json and check.md here")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    p.add_argument("--workers", type=t.positive_int, default=2, help="decoding threads (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_guard(_cmd_check))
