"""Country labels: load time and throughput of the 1:50m point-in-polygon lookup.

Times, in one fresh process: loading the outlines and the GeoNames table,
then labelling points uniform on the sphere (mostly sea) and points near
GeoNames towns (land, many near borders and coasts) with
``regions.country_at`` (outlines only), ``geocode.country_codes`` (outlines +
GeoNames fallback), ``geocode.geonames_country_codes`` (nearest town, the
OSV-5M label) and ``geocode.reverse_geocode`` (country, region, city). A
per-point loop over the same outlines (shapely, one point at a time) is the
baseline, timed on a subsample and extrapolated. Also prints how often the
outline label and the nearest-town label disagree.

    python benchmarks/bench_countries.py [--points 100000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from _common import print_table


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--loop-points", type=int, default=2_000, help="subsample for the per-point baseline")
    args = ap.parse_args()

    import shapely  # noqa: F401  (import time is not load time)

    from geospot.geo import geocode, outlines, places, regions

    # Loads from geospot's cache (built on first use): the NumPy outline index and the GeoNames places.
    _, t_outlines = _timed(outlines.outline_index)
    _, t_gazetteer = _timed(places.gazetteer)
    size_kib = regions._asset_path().stat().st_size / 1024

    rng = np.random.default_rng(0)
    n = args.points
    sphere = (np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n))
    gaz = places.gazetteer()
    pick = rng.integers(0, len(gaz.country_code), n)
    town_lat = np.degrees(np.arcsin(gaz.xyz[pick, 2])) + rng.normal(0, 0.1, n)  # ~10 km around towns
    town_lon = np.degrees(np.arctan2(gaz.xyz[pick, 1], gaz.xyz[pick, 0])) + rng.normal(0, 0.1, n)
    towns = (np.clip(town_lat, -90, 90), (town_lon + 180) % 360 - 180)

    polygons = regions.country_polygons()
    parts, owner = shapely.get_parts(np.array([p["geometry"] for p in polygons], dtype=object), return_index=True)
    codes = [p["iso2"] for p in polygons]
    tree = shapely.STRtree(parts)
    rows = []
    for label, (lat, lon) in (("uniform on the sphere", sphere), ("within ~10 km of towns", towns)):
        m = min(args.loop_points, n)

        def loop():
            out = []
            for a, b in zip(lat[:m].tolist(), lon[:m].tolist()):
                hits = tree.query(shapely.Point(b, a), predicate="intersects")
                out.append(codes[owner[max(hits)]] if len(hits) else "")  # on a border: the later polygon
            return out

        base_out, base = _timed(loop)
        assert base_out == regions.country_at(lat[:m], lon[:m]).tolist(), "vectorised lookup disagrees with the loop"
        base *= n / m
        rows.append([label, "per-point STRtree loop (baseline)", f"{n:,}", f"{base:.2f}", f"{n / base:,.0f}",
                     f"timed on {m:,}, extrapolated"])
        inside, t = _timed(lambda: regions.country_at(lat, lon))
        rows.append([label, "regions.country_at", f"{n:,}", f"{t:.2f}", f"{n / t:,.0f}",
                     f"{(inside != '').mean():.0%} inside an outline; {base / t:.0f}x the loop"])
        ours, t = _timed(lambda: geocode.country_codes(lat, lon))
        rows.append([label, "geocode.country_codes", f"{n:,}", f"{t:.2f}", f"{n / t:,.0f}",
                     f"{(ours != '').mean():.0%} labelled"])
        gn, t = _timed(lambda: geocode.geonames_country_codes(lat, lon))
        both = (ours != "")
        rows.append([label, "geocode.geonames_country_codes", f"{n:,}", f"{t:.2f}", f"{n / t:,.0f}",
                     f"differs from country_codes on {(gn[both] != ours[both]).mean():.1%} of labelled"])
        _, t = _timed(lambda: geocode.reverse_geocode(lat, lon))
        rows.append([label, "geocode.reverse_geocode", f"{n:,}", f"{t:.2f}", f"{n / t:,.0f}", "country, region, city"])

    print_table(["points", "method", "n", "seconds", "per second", "note"], rows,
                title=f"country labels: outlines {size_kib:.0f} KiB, load {t_outlines:.3f} s "
                      f"(+ GeoNames table {t_gazetteer:.2f} s)")


if __name__ == "__main__":
    main()
