"""`geospot data streetview` and `geospot data mapillary`: collect street-level
imagery over any region (cells over the region, sample points in every cell,
the imagery nearest each point at several headings), resumably."""
from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import os
import sys
from pathlib import Path

from geospot.cli import argtypes as t

POINTS_FILE = "points.csv"

_COMMON_EPILOG = """
Where to look: either --region (cells of --grid/--cell-km over the region's
land, or the cells of a model with --cells, and --attempts-per-cell random
points in each) or --points FILE (CSV with columns cell,lat,lon, the points
of a cell on consecutive rows, tried in file order).

Resume: rerun the same command. Locations already in OUT/manifest.csv are
never downloaded again; points already tried are skipped. The sampled points
are kept in OUT/points.csv so a rerun tries the same ones.

Output: OUT/manifest.csv (path,lat,lon,location_id,heading,capture_date,cell,
source_id,copyright; lat/lon are where the imagery is, not the sampled point),
OUT/images/, OUT/attempts.jsonl (journal), OUT/collect.json (settings).

Exit status: 0 finished, 3 stopped by --budget, 1 stopped by an API error,
2 bad arguments, 130 interrupted (rerun to resume).

You are responsible for complying with the provider's terms of service.
"""


def _wrap(text: str) -> str:
    import textwrap

    return textwrap.fill(text, width=79)


def register(data_sub) -> None:
    """Add the `streetview` and `mapillary` verbs to the `geospot data` group."""
    sv = data_sub.add_parser(
        "streetview", help="collect Google Street View images over a region (needs an API key)",
        description=_wrap("Collect Google Street View Static API images over a region: for every sample point "
                          "the metadata endpoint finds the nearest outdoor panorama, and one image per heading "
                          "is saved for each new panorama, until every cell holds --per-cell locations. "
                          "Metadata requests are free at Google; image requests are billed."),
        epilog=_COMMON_EPILOG + "\nExample:\n  export GOOGLE_MAPS_API_KEY=...\n"
               "  geospot data streetview --region Croatia --grid square --cell-km 50 --per-cell 10 "
               "--out data/croatia --dry-run\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_where(sv)
    g = sv.add_argument_group("Street View")
    g.add_argument("--key-env", default="GOOGLE_MAPS_API_KEY", metavar="NAME",
                   help="environment variable holding the API key (default: %(default)s); "
                        "the key is never written or printed")
    g.add_argument("--signing-secret-env", default=None, metavar="NAME",
                   help="environment variable holding a URL-signing secret (adds Google's signature parameter)")
    g.add_argument("--headings", default="0,90,180,270", metavar="DEG,DEG,...",
                   help="camera headings in degrees, one image each (default: %(default)s)")
    g.add_argument("--size", default="640x640", metavar="WxH", help="image size, at most 640x640 (default: %(default)s)")
    g.add_argument("--fov", type=t.float_range(10.0, 120.0), default=90.0, metavar="DEG", help="horizontal field of view, 10..120 (default: %(default)s)")
    g.add_argument("--pitch", type=t.float_range(-90.0, 90.0), default=0.0, metavar="DEG", help="camera pitch, -90..90 (default: %(default)s)")
    g.add_argument("--radius", type=t.positive_float, default=50.0, metavar="M",
                   help="search radius around each point in metres (default: %(default)s)")
    g.add_argument("--any-source", action="store_true",
                   help="also accept indoor and user-contributed panoramas (default: outdoor only)")
    g.add_argument("--base-url", default=None, metavar="URL",
                   help="API base URL (default: https://maps.googleapis.com/maps/api/streetview)")
    _add_run(sv)
    sv.set_defaults(func=_run_streetview)

    mp = data_sub.add_parser(
        "mapillary", help="collect Mapillary images over a region (needs an access token)",
        description=_wrap("Collect Mapillary images (Graph API v4) over a region: for every sample point a "
                          "small box around it is searched and the nearest image not yet collected is saved "
                          "(its 1024 px thumbnail), until every cell holds --per-cell images. location_id is "
                          "the image's sequence, so one drive never straddles a train/test split."),
        epilog=_COMMON_EPILOG + "\nExample:\n  export MAPILLARY_ACCESS_TOKEN=MLY|...\n"
               "  geospot data mapillary --region 'Croatia' --cell-km 50 --per-cell 10 --out data/croatia-mly\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_where(mp)
    g = mp.add_argument_group("Mapillary")
    g.add_argument("--token-env", "--key-env", dest="key_env", default="MAPILLARY_ACCESS_TOKEN", metavar="NAME",
                   help="environment variable holding the access token (default: %(default)s); "
                        "the token is never written or printed")
    g.add_argument("--auth", choices=("header", "query"), default="header",
                   help="send the token as 'Authorization: OAuth TOKEN' (default) or as ?access_token=")
    g.add_argument("--radius", type=t.positive_float, default=100.0, metavar="M",
                   help="search radius around each point in metres (default: %(default)s)")
    g.add_argument("--limit", type=t.positive_int, default=50, help="images asked per search (default: %(default)s)")
    g.add_argument("--base-url", default=None, metavar="URL", help="API base URL (default: https://graph.mapillary.com)")
    _add_run(mp)
    mp.set_defaults(func=_run_mapillary)


def _add_where(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where to look")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--region", metavar="SPEC",
                     help="country name or ISO code, 'lat_min,lon_min,lat_max,lon_max', a GeoJSON file, or 'world'")
    src.add_argument("--points", metavar="CSV", help="sample points instead of --region: CSV with cell,lat,lon")
    g.add_argument("--grid", choices=("square", "hex"), default="square", help="grid cell shape (default: %(default)s)")
    g.add_argument("--cell-km", type=t.positive_float, default=50.0, metavar="KM", help="grid cell edge in km (default: %(default)s)")
    g.add_argument("--cells", metavar="DIR", help="use the cells saved in DIR (cells.json) instead of a grid")
    g.add_argument("--per-cell", type=t.positive_int, default=10, metavar="N", help="locations wanted per cell (default: %(default)s)")
    g.add_argument("--attempts-per-cell", type=t.positive_int, default=None, metavar="M",
                   help="sample points tried per cell before giving up on it (default: 5 x --per-cell)")
    g.add_argument("--include-sea", action="store_true", help="also sample points at sea (default: land only)")
    g.add_argument("--seed", type=t.nonneg_int, default=0, help="random seed of the sample points (default: %(default)s)")


def _add_run(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, metavar="DIR", help="output folder (created; rerun to resume)")
    g.add_argument("--concurrency", type=t.positive_int, default=4, metavar="N", help="parallel requests (default: %(default)s)")
    g.add_argument("--rate", type=t.nonneg_float, default=10.0, metavar="PER_S",
                   help="at most this many requests per second, 0 = unlimited (default: %(default)s)")
    g.add_argument("--budget", type=t.nonneg_int, default=None, metavar="N",
                   help="send at most N requests in this run, retries included, then stop cleanly")
    g.add_argument("--timeout", type=t.positive_float, default=30.0, metavar="S", help="per-request timeout (default: %(default)s)")
    g.add_argument("--retries", type=t.nonneg_int, default=5, metavar="N", help="retries per request (default: %(default)s)")
    g.add_argument("--dry-run", action="store_true",
                   help="print the expected number of requests (lookups + images) and stop; needs no key")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("-v", "--verbose", action="store_true", help="log retries")


# ---------------------------------------------------------------- shared run
def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


class _TqdmHandler(logging.Handler):
    """Log lines on stderr that do not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise
            self.handleError(record)


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("geospot.data")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Respect a logging setup made by the embedding program; otherwise print our lines.
    if not logger.handlers and not logging.getLogger().handlers:
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_points_csv(path: Path):
    """Yield (cell, lat, lon) from a CSV; bad rows raise naming the line."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("cell", "lat", "lon") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing} (need cell,lat,lon)")
        for line_no, row in enumerate(reader, start=2):
            try:
                lat, lon = float(row["lat"]), float(row["lon"])
            except (TypeError, ValueError):
                raise ValueError(f"{path} line {line_no}: lat/lon not numeric: {row['lat']!r}, {row['lon']!r}") from None
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"{path} line {line_no}: coordinates out of range: {lat}, {lon}")
            if not row["cell"]:
                raise ValueError(f"{path} line {line_no}: empty cell id")
            yield row["cell"], lat, lon


def _where_settings(args) -> dict:
    """The settings that decide which points are tried (checked on resume)."""
    if args.points:
        return {"points_sha256": _file_sha256(Path(args.points))}
    attempts = args.attempts_per_cell or 5 * args.per_cell
    where = {"region": args.region, "attempts_per_cell": attempts, "seed": args.seed,
             "land_only": not args.include_sea}
    if args.cells:
        where["cells_sha256"] = _file_sha256(Path(args.cells) / "cells.json")
    else:
        where.update(grid=args.grid, cell_km=args.cell_km)
    return where


def _points(args, out: Path, save: bool):
    """The sample points: --points, the saved OUT/points.csv, or freshly sampled."""
    if args.points:
        return _read_points_csv(Path(args.points))
    saved = out / POINTS_FILE
    if saved.exists():
        return _read_points_csv(saved)
    from geospot.data.sampling import sample_points

    attempts = args.attempts_per_cell or 5 * args.per_cell
    cells = None
    if args.cells:
        from geospot.geo.cells import CellTable

        cells = CellTable.load(args.cells)
    print(f"sampling {attempts} points per cell over {args.region!r} ...", file=sys.stderr)
    frame = sample_points(args.region, n_per_cell=attempts, cells=cells, land_only=not args.include_sea,
                          seed=args.seed, cell_km=args.cell_km, shape=args.grid)
    if len(frame) == 0:
        raise ValueError(f"region {args.region!r}: no sample points (is it empty or at sea?)")
    if save:  # so that a rerun tries exactly these points, whatever the sampler version
        out.mkdir(parents=True, exist_ok=True)
        tmp = saved.with_suffix(".csv.tmp")
        frame[["cell", "lat", "lon"]].to_csv(tmp, index=False, float_format="%.7f")
        os.replace(tmp, saved)
    return frame[["cell", "lat", "lon"]].itertuples(index=False, name=None)


def _client(args, secrets: tuple[str, ...]):
    from geospot.data.sources.http import Budget, HttpClient, RetryPolicy

    log = logging.getLogger("geospot.data.collect")
    return HttpClient(timeout_s=args.timeout, retry=RetryPolicy(max_retries=args.retries),
                      rate_per_s=args.rate if args.rate > 0 else None, budget=Budget(args.budget),
                      secrets=secrets, max_connections=args.concurrency, log=log.debug)


def _validate(args) -> str | None:
    if args.per_cell < 1:
        return "--per-cell must be >= 1"
    if args.attempts_per_cell is not None and args.attempts_per_cell < 1:
        return "--attempts-per-cell must be >= 1"
    if args.concurrency < 1:
        return "--concurrency must be >= 1"
    if args.budget is not None and args.budget < 0:
        return "--budget must be >= 0"
    if args.timeout <= 0 or args.retries < 0 or args.rate < 0:
        return "--timeout must be > 0, --retries and --rate >= 0"
    if args.cell_km <= 0:
        return "--cell-km must be > 0"
    if args.points and not Path(args.points).is_file():
        return f"--points {args.points}: no such file"
    if args.cells and not (Path(args.cells) / "cells.json").is_file():
        return f"--cells {args.cells}: no cells.json there"
    return None


def _run(args, make_source) -> int:
    """Shared body of both verbs: plan or collect, print the summary on stdout."""
    from geospot.data.sources.collect import Collector, CollectError, check_settings, plan

    _setup_logging(args.verbose)
    problem = _validate(args)
    if problem:
        return _fail(problem)
    secret = os.environ.get(args.key_env, "")
    if not secret and not args.dry_run:
        return _fail(f"environment variable {args.key_env} is not set (it must hold the "
                     f"{'API key' if args.command_name == 'streetview' else 'access token'})")
    out = Path(args.out)
    source = None
    try:
        source = make_source(args, secret or "dry-run-placeholder")
        collector = Collector(source, out, per_cell=args.per_cell, concurrency=args.concurrency,
                              settings=_where_settings(args), progress=not args.no_progress)
        if out.exists():  # fail before sampling when the folder cannot be resumed
            check_settings(out, collector.settings, write=False)
        points = _points(args, out, save=not args.dry_run)
        if args.dry_run:
            p = plan(points, args.per_cell, source.views_per_location, out, source.requests_per_lookup)
            print("\n".join(p.lines(source.name)))
            return 0
        summary = collector.run(points)
    except (CollectError, ValueError, TypeError, OSError) as exc:
        return _fail(source.client.redact(exc) if source is not None else str(exc))
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    print("\n".join(summary.lines()))
    if summary.stop_reason is None:
        return 0
    return 3 if summary.stop_kind == "budget" else 1


def _run_streetview(args) -> int:
    def make(args, key):
        from geospot.data.sources.streetview import DEFAULT_BASE_URL, StreetViewSource, parse_size

        try:
            headings = [float(h) for h in args.headings.split(",") if h.strip()]
        except ValueError:
            raise ValueError(f"--headings must be comma-separated degrees, got {args.headings!r}") from None
        secret = os.environ.get(args.signing_secret_env, "") if args.signing_secret_env else None
        if args.signing_secret_env and not secret and not args.dry_run:
            raise ValueError(f"environment variable {args.signing_secret_env} is not set")
        client = _client(args, (key,) + ((secret,) if secret else ()))
        return StreetViewSource(client, key, headings_deg=headings, size=parse_size(args.size), fov_deg=args.fov,
                                pitch_deg=args.pitch, radius_m=args.radius, outdoor_only=not args.any_source,
                                base_url=args.base_url or DEFAULT_BASE_URL, signing_secret=secret or None)

    args.command_name = "streetview"
    return _run(args, make)


def _run_mapillary(args) -> int:
    def make(args, token):
        from geospot.data.sources.mapillary import DEFAULT_BASE_URL, MapillarySource

        return MapillarySource(_client(args, (token,)), token, radius_m=args.radius, limit=args.limit,
                               auth=args.auth, base_url=args.base_url or DEFAULT_BASE_URL)

    args.command_name = "mapillary"
    return _run(args, make)
