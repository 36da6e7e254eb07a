"""Check a dataset before training on it: what is in it, and what is wrong with it.

`check_dataset` returns a JSON-ready report:
- counts per country (offline reverse geocoding) and per cell (a `CellTable`
  or S2 cells at a level);
- rows the manifest itself rejects (bad coordinates, exact duplicate rows),
  images listed twice at different coordinates;
- missing and undecodable files (every file is decoded, with a progress bar);
- coordinate outliers: (0, 0) "null island", at sea (`global_land_mask`, with a
  coastal tolerance), outside the requested region (with the distance to it);
- locations whose views lie further apart than `spread_km`;
- optionally, near-duplicate images and the pairs that straddle train/test.

`report_markdown` / `write_check_report` render it for people and programs.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from geospot.geo.distance import EARTH_RADIUS_KM, haversine_km, latlon_to_xyz, xyz_to_latlon

__all__ = ["check_dataset", "report_json", "report_markdown", "write_check_report"]

_NULL_ISLAND_DEG = 1e-4  # ~10 m: cameras and broken pipelines write exact zeros
_MD_LIST = 20  # rows listed per section in Markdown (JSON keeps them all)


def _load(manifest):
    """(Manifest with the valid rows, the manifest's own problems) from a Manifest or a path."""
    from geospot.data.manifest import Manifest, read_manifest

    if isinstance(manifest, Manifest):
        return manifest, list(manifest.problems)
    if isinstance(manifest, pd.DataFrame):
        m = Manifest.from_records(manifest, check_files=False, on_error="drop")
        return m, list(m.problems)
    m = read_manifest(manifest, check_files=False, on_error="drop")
    return m, list(m.problems)


def _decode_all(paths: list[str], workers: int, progress: bool) -> list[str | None]:
    """None for every decodable file, else the reason (file not found, truncated, ...)."""
    from tqdm import tqdm

    from geospot.data.images import ImageError, open_image

    def one(path: str) -> str | None:
        try:
            # A reduced-scale JPEG decode still reads every byte of the file: truncation shows.
            open_image(path, min_side=64).close()
            return None
        except ImageError as exc:
            return exc.reason
        except Exception as exc:  # never lose the batch to one file
            return f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(tqdm(pool.map(one, paths), total=len(paths), desc="decoding", unit="img",
                         file=sys.stderr, disable=not progress))


def _country_codes(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray | None, str]:
    try:
        from geospot.geo.geocode import country_codes

        return np.asarray(country_codes(lat, lon), dtype=object), "country outlines (Natural Earth 1:50m; GeoNames by the coast)"
    except ImportError:
        pass
    try:
        from geospot.geo.regions import country_at

        return np.asarray(country_at(lat, lon), dtype=object), "Natural Earth country polygons"
    except ImportError:
        return None, "unavailable (geospot.geo.geocode / regions not installed)"


def _cell_labels(lat, lon, cells, s2_level):
    if cells is not None:
        idx = cells.assign(lat, lon)
        ids = np.asarray(cells.ids, dtype=object)
        return np.where(idx >= 0, ids[np.maximum(idx, 0)], "(outside every cell)"), {"scheme": cells.scheme, "n_cells": len(cells)}
    from geospot.geo.cells import s2

    ids = s2.cell_parent(s2.latlon_to_leaf_id(lat, lon), int(s2_level))
    tokens = {int(c): f"s2:{s2.to_token(int(c))}" for c in np.unique(ids).tolist()}
    return np.asarray([tokens[int(c)] for c in ids.tolist()], dtype=object), {"scheme": "s2", "level": int(s2_level)}


def _at_sea(lat: np.ndarray, lon: np.ndarray, tolerance_km: float) -> np.ndarray:
    """True where neither the point nor any point `tolerance_km` away (8 compass
    directions) is land: coastal roads and piers are not flagged."""
    from geospot.geo import landmask as globe  # global_land_mask's answers, loaded in ms

    sea = ~globe.is_land(lat, lon)
    if tolerance_km <= 0 or not sea.any():
        return sea
    idx = np.flatnonzero(sea)
    phi, lam = np.radians(lat[idx]), np.radians(lon[idx])
    delta = tolerance_km / EARTH_RADIUS_KM
    for bearing in np.radians(np.arange(0, 360, 45)):
        # Destination point on the sphere at distance `delta` along `bearing`.
        phi2 = np.arcsin(np.clip(np.sin(phi) * np.cos(delta) + np.cos(phi) * np.sin(delta) * np.cos(bearing), -1, 1))
        lam2 = lam + np.arctan2(np.sin(bearing) * np.sin(delta) * np.cos(phi), np.cos(delta) - np.sin(phi) * np.sin(phi2))
        lon2 = (np.degrees(lam2) + 180.0) % 360.0 - 180.0
        land = globe.is_land(np.degrees(phi2), lon2)
        sea[idx[land]] = False
    return sea


def _outside_region(lat, lon, region, tolerance_km: float) -> tuple[np.ndarray, np.ndarray]:
    """(outside mask, distance in km to the region for the outside points)."""
    import shapely

    from geospot.data.sampling import region_geometry

    geometry = region_geometry(region)
    if geometry is None:
        return np.zeros(len(lat), bool), np.zeros(0)
    shapely.prepare(geometry)
    outside = ~shapely.intersects_xy(geometry, lon, lat)
    idx = np.flatnonzero(outside)
    dist = np.zeros(len(idx))
    if len(idx):
        # Nearest point of the region in degree space; its great-circle distance is what we report.
        lines = shapely.shortest_line(shapely.points(lon[idx], lat[idx]), geometry)
        ends = shapely.get_coordinates(lines).reshape(-1, 2, 2)
        dist = haversine_km(ends[:, 0, 1], ends[:, 0, 0], ends[:, 1, 1], ends[:, 1, 0])
    keep = dist > tolerance_km
    mask = np.zeros(len(lat), bool)
    mask[idx[keep]] = True
    return mask, dist[keep]


def _location_spread(groups: np.ndarray, lat: np.ndarray, lon: np.ndarray, spread_km: float) -> list[dict]:
    """Locations with two views further apart than `spread_km` (exact max pairwise distance)."""
    codes, uniques = pd.factorize(pd.Series(groups, dtype=object))
    n = len(uniques)
    sizes = np.bincount(codes, minlength=n)
    xyz = latlon_to_xyz(lat, lon)
    sums = np.zeros((n, 3))
    np.add.at(sums, codes, xyz)
    m_lat, m_lon = xyz_to_latlon(sums)
    to_mean = haversine_km(lat, lon, m_lat[codes], m_lon[codes])
    radius = np.zeros(n)
    np.maximum.at(radius, codes, np.nan_to_num(to_mean, nan=np.inf))
    # Two views are at most 2 * radius apart: only those groups need the exact pairwise check.
    out = []
    for g in np.flatnonzero((sizes > 1) & (2 * radius > spread_km)):
        rows = np.flatnonzero(codes == g)
        d = haversine_km(lat[rows, None], lon[rows, None], lat[None, rows], lon[None, rows])
        if d.max() > spread_km:
            out.append({"location_id": str(uniques[g]), "n_views": int(len(rows)), "max_km": round(float(d.max()), 3)})
    return sorted(out, key=lambda r: -r["max_km"])


def check_dataset(
    manifest,
    region=None,
    cells=None,
    s2_level: int | None = None,
    decode: bool = True,
    near_duplicates: bool = False,
    dedup_max_distance: int = 4,
    spread_km: float = 1.0,
    sea_tolerance_km: float = 1.0,
    region_tolerance_km: float = 10.0,
    workers: int = 2,
    progress: bool = True,
) -> dict:
    """Check a manifest (a `Manifest`, a DataFrame or a manifest path) and return a report dict.

    `region`: flag rows more than `region_tolerance_km` outside it (the country
    outlines are 1:50m, off by 1-2 km on coasts, hence the tolerance). `cells` (a `CellTable`) or
    `s2_level`: counts per cell. `decode=False` only checks that files exist.
    `near_duplicates=True` hashes every decodable image (see `geospot.data.dedup`).
    Every listed row carries its line number in the manifest (`row`) and `path`.
    """
    m, manifest_problems = _load(manifest)
    df = m.df
    rows = np.asarray(m.row_numbers, dtype=np.int64)
    lat, lon = m.lat, m.lon
    paths = m.paths

    def listing(mask, **columns) -> list[dict]:
        out = []
        for k in np.flatnonzero(mask):
            item = {"row": int(rows[k]), "path": paths[k], "lat": float(lat[k]), "lon": float(lon[k])}
            item.update({name: (values[k].item() if hasattr(values[k], "item") else values[k]) for name, values in columns.items()})
            out.append(item)
        return out

    report: dict = {
        "source": str(m.source) if m.source else None,
        "n_rows": int(len(df)) + len({p.row for p in manifest_problems if p.row is not None}),
        "n_valid_rows": int(len(df)),
        "n_locations": int(df["location_id"].nunique()) if len(df) else 0,
    }
    if "split" in df.columns:
        report["splits"] = {str(k): int(v) for k, v in df["split"].value_counts().items()}

    # Rows the manifest rejected: exact duplicates apart, they are invalid input.
    dup = [p for p in manifest_problems if p.message.startswith("duplicate of row")]
    invalid = [p for p in manifest_problems if p not in dup]
    report["invalid_rows"] = [{"row": p.row, "column": p.column, "message": p.message} for p in invalid]
    report["duplicate_rows"] = [{"row": p.row, "message": p.message} for p in dup]
    counts = Counter(paths)
    repeated = np.array([counts[p] > 1 for p in paths], dtype=bool)
    report["repeated_paths"] = listing(repeated)  # same image at different coordinates

    # Files
    if len(df):
        if decode:
            reasons = _decode_all(paths, workers, progress)
        else:
            reasons = [None if os.path.isfile(p) else "file not found" for p in paths]
    else:
        reasons = []
    reason_arr = np.asarray(reasons, dtype=object)
    missing = np.array([r is not None and r.startswith("file not found") for r in reasons], dtype=bool)
    bad = np.array([r is not None for r in reasons], dtype=bool) & ~missing
    report["files"] = {"checked": int(len(paths)), "decoded": bool(decode),
                       "missing": listing(missing), "undecodable": listing(bad, reason=reason_arr)}

    # Where the rows are
    codes, how = _country_codes(lat, lon) if len(df) else (np.zeros(0, object), "none")
    report["countries"] = {"method": how, "counts": {}} if codes is None else {
        "method": how, "counts": {str(k): int(v) for k, v in Counter(codes.tolist()).most_common()}}
    if cells is not None or s2_level is not None:
        labels, info = _cell_labels(lat, lon, cells, s2_level)
        per_cell = Counter(labels.tolist())
        values = np.array(list(per_cell.values())) if per_cell else np.zeros(0)
        info.update({"occupied": len(per_cell),
                     "min": int(values.min()) if len(values) else 0, "median": float(np.median(values)) if len(values) else 0.0,
                     "max": int(values.max(initial=0)),
                     "counts": {str(k): int(v) for k, v in per_cell.most_common()}})
        if cells is not None:
            info["empty_cells"] = [c for c in cells.ids if c not in per_cell]
        report["cells"] = info

    # Coordinate outliers
    null_island = (np.abs(lat) < _NULL_ISLAND_DEG) & (np.abs(lon) < _NULL_ISLAND_DEG)
    sea = _at_sea(lat, lon, sea_tolerance_km) & ~null_island if len(df) else np.zeros(0, bool)
    coords = {"null_island": listing(null_island),
              "at_sea": listing(sea), "sea_tolerance_km": sea_tolerance_km}
    if region is not None:
        outside, dist = _outside_region(lat, lon, region, region_tolerance_km)
        dist_full = np.zeros(len(lat))
        dist_full[outside] = np.round(dist, 3)
        coords.update({"region": str(region), "region_tolerance_km": region_tolerance_km,
                       "outside_region": listing(outside, distance_km=dist_full)})
    report["coordinates"] = coords
    report["location_spread"] = {"threshold_km": spread_km,
                                 "locations": _location_spread(m.groups, lat, lon, spread_km) if len(df) else []}

    if near_duplicates:
        report["near_duplicates"] = _near_duplicates(df, paths, ~(missing | bad), dedup_max_distance, workers, progress, rows)

    report["summary"] = _summary(report)
    return report


def _near_duplicates(df, paths, ok, max_distance, workers, progress, rows) -> dict:
    from geospot.data.dedup import find_duplicates, hash_images

    idx = np.flatnonzero(ok)
    hashes = hash_images([paths[k] for k in idx], workers=workers, progress=progress)
    sub = df.iloc[idx]
    pairs = find_duplicates(hashes, max_distance=max_distance,
                            split=sub["split"].to_numpy(object) if "split" in sub.columns else None,
                            lat=sub["lat"].to_numpy(), lon=sub["lon"].to_numpy(),
                            location_id=sub["location_id"].to_numpy(object))
    pairs = pairs[~pairs["same_location"]]  # views of one place are expected to look alike
    items = []
    for rec in pairs.to_dict("records"):
        item = {"row_a": int(rows[idx[rec["a"]]]), "row_b": int(rows[idx[rec["b"]]]),
                "path_a": rec["path_a"], "path_b": rec["path_b"],
                "phash_distance": int(rec["phash_distance"]), "dhash_distance": int(rec["dhash_distance"]),
                "distance_km": round(float(rec["distance_km"]), 3)}
        if "straddles" in rec:
            item.update({"split_a": rec["split_a"], "split_b": rec["split_b"], "straddles": bool(rec["straddles"])})
        items.append(item)
    return {"max_distance": max_distance, "pairs": items,
            "straddling": sum(1 for it in items if it.get("straddles"))}


def _summary(report: dict) -> dict:
    issues = {
        "invalid_rows": len(report["invalid_rows"]),
        "duplicate_rows": len(report["duplicate_rows"]),
        "missing_files": len(report["files"]["missing"]),
        "undecodable_files": len(report["files"]["undecodable"]),
        "null_island": len(report["coordinates"]["null_island"]),
        "at_sea": len(report["coordinates"]["at_sea"]),
        "outside_region": len(report["coordinates"].get("outside_region", [])),
        "spread_locations": len(report["location_spread"]["locations"]),
    }
    if "near_duplicates" in report:
        issues["near_duplicate_pairs"] = len(report["near_duplicates"]["pairs"])
        issues["straddling_pairs"] = report["near_duplicates"]["straddling"]
    return {"issues": issues, "ok": not any(issues.values())}


# ---------------------------------------------------------------- rendering


def _table(items: list[dict], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for it in items[:_MD_LIST]:
        cells = [str(it.get(c, "")).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    if len(items) > _MD_LIST:
        lines.append(f"\n... and {len(items) - _MD_LIST} more (see the JSON report)")
    return lines


def report_markdown(report: dict) -> str:
    """The report as Markdown: a summary, counts, then each problem list (first rows)."""
    s = report["summary"]
    out = [f"# Dataset check: {report.get('source') or 'manifest'}", "",
           f"- rows: {report['n_rows']} ({report['n_valid_rows']} valid), locations: {report['n_locations']}",
           f"- verdict: {'OK' if s['ok'] else 'problems found'}", ""]
    if "splits" in report:
        out.append("- splits: " + ", ".join(f"{k} {v}" for k, v in report["splits"].items()))
        out.append("")
    out += ["## Issues", "", "| issue | count |", "|---|---|"]
    out += [f"| {k.replace('_', ' ')} | {v} |" for k, v in s["issues"].items()]
    countries = report["countries"]
    out += ["", f"## Countries ({countries['method']})", ""]
    out += _table([{"country": k, "rows": v} for k, v in countries["counts"].items()], ["country", "rows"])
    if "cells" in report:
        c = report["cells"]
        line = f"{c['occupied']} occupied cells; rows per cell: min {c['min']}, median {c['median']:g}, max {c['max']}"
        if "empty_cells" in c:
            line += f"; {len(c['empty_cells'])} of {c['n_cells']} cells hold no row"
        out += ["", f"## Cells ({c['scheme']}{', level ' + str(c['level']) if 'level' in c else ''})", "", line, ""]
        out += _table([{"cell": k, "rows": v} for k, v in c["counts"].items()], ["cell", "rows"])
    sections = [
        ("Invalid rows", report["invalid_rows"], ["row", "column", "message"]),
        ("Duplicate rows", report["duplicate_rows"], ["row", "message"]),
        ("Same image listed at different coordinates", report["repeated_paths"], ["row", "path", "lat", "lon"]),
        ("Missing files", report["files"]["missing"], ["row", "path"]),
        ("Undecodable files", report["files"]["undecodable"], ["row", "path", "reason"]),
        ("Null island (0, 0)", report["coordinates"]["null_island"], ["row", "path"]),
        (f"At sea (no land within {report['coordinates']['sea_tolerance_km']} km)", report["coordinates"]["at_sea"],
         ["row", "path", "lat", "lon"]),
    ]
    if "outside_region" in report["coordinates"]:
        sections.append((f"Outside region {report['coordinates']['region']}", report["coordinates"]["outside_region"],
                         ["row", "path", "lat", "lon", "distance_km"]))
    sections.append((f"Locations spread over more than {report['location_spread']['threshold_km']} km",
                     report["location_spread"]["locations"], ["location_id", "n_views", "max_km"]))
    if "near_duplicates" in report:
        nd = report["near_duplicates"]
        cols = ["row_a", "row_b", "phash_distance", "distance_km"] + (["split_a", "split_b"] if nd["straddling"] or any("split_a" in p for p in nd["pairs"]) else [])
        sections.append((f"Near-duplicate images (pHash within {nd['max_distance']} bits; {nd['straddling']} straddle splits)",
                         sorted(nd["pairs"], key=lambda p: not p.get("straddles", False)), cols))
    for title, items, cols in sections:
        if items:
            out += ["", f"## {title} ({len(items)})", ""] + _table(items, cols)
    return "\n".join(out) + "\n"


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def report_json(report: dict) -> str:
    """The report as JSON text (NaN/inf become null)."""
    return json.dumps(_jsonable(report), indent=2, ensure_ascii=False) + "\n"


def write_check_report(report: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write `check.json` and `check.md` into `out_dir`; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "check.json", out_dir / "check.md"
    json_path.write_text(report_json(report), encoding="utf-8")
    md_path.write_text(report_markdown(report), encoding="utf-8")
    return json_path, md_path
