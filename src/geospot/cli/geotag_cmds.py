"""`geospot geotag`: write estimated positions into photos without GPS (see docs/geotag.md).

    geospot geotag ~/Pictures --dry-run --report review/    # propose, write nothing
    geospot geotag --apply review/proposals.csv             # write what you accepted
    geospot geotag ~/Pictures --max-radius-km 50            # locate and write in one go
    geospot geotag --undo geotag-log.csv                    # every byte back
"""
from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_LOG = "geotag-log.csv"
DEFAULT_MAX_RADIUS_KM = 100.0


def register(sub) -> None:
    p = sub.add_parser("geotag", help="write estimated GPS into photos that lack it (EXIF or XMP sidecar), undoably")
    p.add_argument("paths", nargs="*", metavar="PATH", help="photos, folders (recursive) or globs")
    p.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model)")
    gate = p.add_argument_group("confidence gate")
    gate.add_argument("--max-radius-km", type=float, default=DEFAULT_MAX_RADIUS_KM, metavar="KM",
                      help=f"write only when 90%% of the probability lies within KM (default {DEFAULT_MAX_RADIUS_KM:g})")
    gate.add_argument("--min-prob", type=float, default=0.0, metavar="P",
                      help="and the top cell has at least this probability (default 0)")
    albums = p.add_mutually_exclusive_group()
    albums.add_argument("--same-place", action="store_true", help="all photos show one place: one fused answer")
    albums.add_argument("--album-by", choices=["folder", "time"],
                        help="locate albums together: each folder, or photos taken within --gap-minutes of each other")
    p.add_argument("--gap-minutes", type=float, default=60.0, help="--album-by time: gap that starts a new album (60)")
    out = p.add_argument_group("writing")
    out.add_argument("--dry-run", action="store_true", help="print what would be written; change nothing")
    out.add_argument("--report", metavar="DIR", help="write proposals.csv/.geojson/.html here for review")
    out.add_argument("--log", metavar="LOG.csv", default=DEFAULT_LOG, help=f"undo log to append to (default ./{DEFAULT_LOG})")
    out.add_argument("--overwrite", action="store_true", help="also replace GPS that photos already have")
    out.add_argument("--sidecar", action="store_true", help="write XMP sidecars for JPEGs too (never edit the photo)")
    out.add_argument("--sidecar-name", choices=["ext", "stem"], default="ext",
                     help="ext: photo.HEIC.xmp (darktable, digiKam; default); stem: photo.xmp (Lightroom)")
    out.add_argument("--touch", action="store_true", help="let edited files get the current modification time")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--apply", metavar="REVIEWED.csv", help="write the rows marked decision=write of a reviewed report")
    mode.add_argument("--undo", metavar="LOG.csv", help="restore every file changed in this log, byte for byte")
    p.add_argument("--top-k", type=int, default=5, help="cells behind each estimate (default 5)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_geotag)


def cmd_geotag(args) -> int:
    try:
        if args.undo:
            return _undo(args)
        if args.apply:
            return _apply(args)
        if not args.paths:
            raise SystemExit("error: give photos or folders to geotag (or --apply REVIEWED.csv / --undo LOG.csv)")
        return _run(args)
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:  # one clear line; the traceback only on request
        if args.debug:
            raise
        raise SystemExit(f"error: {exc}")


def _marker(what: str, model: str | None) -> str:
    from geospot import __version__

    name = Path(model).name if model else "bundled default"
    return f"geospot {__version__} {what}, model {name}"


def _undo(args) -> int:
    from geospot.geotag.changelog import undo

    if args.paths:
        raise SystemExit("error: --undo takes only the log, no PATH")
    if not Path(args.undo).is_file():
        raise SystemExit(f"error: --undo {args.undo}: no such log")
    try:
        results = undo(args.undo)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    counts = {"restored": 0, "already-original": 0, "failed": 0}
    for r in results:
        counts[r.status] += 1
        if r.status == "failed":
            print(f"error: {r.target}: {r.message}", file=sys.stderr)
        elif r.status == "restored":
            print(f"restored  {r.target}" + (f" ({r.message})" if r.message else ""))
    print(f"{counts['restored']} restored, {counts['already-original']} already original, {counts['failed']} failed",
          file=sys.stderr)
    return 1 if counts["failed"] else 0


def _write_all(items, args, log) -> tuple[int, int]:
    """items: (path, GpsFix, method). Returns (written, failed)."""
    from geospot.geotag.writer import write_fix

    written = failed = 0
    for path, fix, method in items:
        o = write_fix(path, fix, method=method, log=log, sidecar_style=args.sidecar_name, overwrite=args.overwrite,
                      dry_run=args.dry_run, keep_times=not args.touch)
        if o.status in ("written", "would-write"):
            written += 1
            verb = "would write" if o.status == "would-write" else "written    "
            print(f"{verb} {path}  {_pos(fix.lat, fix.lon)} -> {o.message}")
        elif o.status == "has-gps":
            print(f"skip        {path}: {o.message}")
        else:
            failed += 1
            print(f"error: {path}: {o.message}", file=sys.stderr)
    return written, failed


def _pos(lat: float, lon: float) -> str:
    return f"{abs(lat):.5f}°{'S' if lat < 0 else 'N'} {abs(lon):.5f}°{'W' if lon < 0 else 'E'}"


def _log(args):
    from geospot.geotag.changelog import ChangeLog

    return None if args.dry_run else ChangeLog(args.log)


def _run(args) -> int:
    from geospot.geotag.fix import GpsFix
    from geospot.geotag.plan import plan
    from geospot.geotag.report import write_report
    from geospot.models.checkpoint import CheckpointError
    from geospot.predict import Predictor, expand_paths

    if args.max_radius_km is not None and args.max_radius_km <= 0:
        raise SystemExit("error: --max-radius-km must be > 0")
    files, missing = expand_paths(args.paths)
    failed = 0
    for m in missing:
        print(f"error: {m.path}: {m.error}", file=sys.stderr)
        failed += 1
    log = _log(args)
    predictor = None

    def predict(paths, same_place):
        nonlocal predictor
        if predictor is None:  # only when some photo needs locating
            try:
                predictor = Predictor.load(args.model)
            except (CheckpointError, FileNotFoundError) as exc:
                raise SystemExit(f"error: {exc}")
        if same_place and not args.same_place:  # an album (--album-by): the album model when there is one
            from geospot.albums import geotag_album

            return geotag_album(predictor, paths, getattr(args, "album_method", "fuse"), args.top_k)
        return predictor.predict(paths, top_k=args.top_k, same_place=same_place)

    grouping = "all" if args.same_place else args.album_by
    done = log.done() if log is not None and log.path.is_file() else None
    props = plan(files, predict, max_radius_km=args.max_radius_km, min_prob=args.min_prob, grouping=grouping,
                 gap_minutes=args.gap_minutes, overwrite=args.overwrite, force_sidecar=args.sidecar,
                 sidecar_style=args.sidecar_name, done=done, progress=True)
    if args.report:
        paths = write_report(props, args.report)
        print(f"report: {paths['csv']} (+ .geojson, .html); edit it, then: geospot geotag --apply {paths['csv']}",
              file=sys.stderr)
    items, counts = [], {}
    for p in props:
        counts[p.status] = counts.get(p.status, 0) + 1
        if p.status == "propose":
            radius_m = p.radius90_km * 1000.0 if p.radius90_km is not None else None
            items.append((p.path, GpsFix(p.lat, p.lon, radius_m, _marker("estimate", args.model)), p.method))
        elif p.status == "failed":
            failed += 1
            print(f"error: {p.path}: {p.reason}", file=sys.stderr)
        else:
            print(f"skip        {p.path}: {p.reason}")
    written, write_failed = _write_all(items, args, log)
    failed += write_failed
    _summary(written, counts, failed, args)
    return 1 if failed else 0


def _summary(written: int, counts: dict, failed: int, args) -> None:
    verb = "would be written" if args.dry_run else "written"
    parts = [f"{written} {verb}"]
    for key, label in (("has-gps", "already had GPS"), ("done", "done by an earlier run"),
                       ("below-gate", "below the confidence gate")):
        if counts.get(key):
            parts.append(f"{counts[key]} {label}")
    parts.append(f"{failed} failed")
    print(", ".join(parts), file=sys.stderr)
    if counts.get("below-gate"):
        print(f"  (gate: 90% radius <= {args.max_radius_km:g} km; see --report, or raise --max-radius-km)",
              file=sys.stderr)
    if written and not args.dry_run:
        print(f"log: {args.log}  (undo: geospot geotag --undo {args.log})", file=sys.stderr)


def _apply(args) -> int:
    from geospot.geotag.fix import GpsFix
    from geospot.geotag.report import read_reviewed
    from geospot.geotag.writer import write_method

    if args.paths:
        raise SystemExit("error: --apply takes only the reviewed CSV, no PATH")
    if not Path(args.apply).is_file():
        raise SystemExit(f"error: --apply {args.apply}: no such file")
    rows, errors = read_reviewed(args.apply)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    items = []
    for r in rows:
        radius_m = r.radius_km * 1000.0 if r.radius_km is not None else None
        try:
            method = write_method(r.path, args.sidecar or r.method == "sidecar")
        except OSError as exc:
            errors.append(r.path)
            print(f"error: {args.apply} row {r.row}: {r.path}: {exc.strerror or exc}", file=sys.stderr)
            continue
        items.append((r.path, GpsFix(r.fix_lat, r.fix_lon, radius_m, _marker("reviewed estimate", args.model)), method))
    log = _log(args)
    written, failed = _write_all(items, args, log)
    _summary(written, {}, failed + len(errors), args)
    return 1 if failed or errors else 0
