#!/usr/bin/env python
"""Regenerate geospot's vendored country outlines (src/geospot/assets/ne_50m_countries.npz).

Source: Natural Earth 1:50m Cultural Vectors, Admin 0 - Countries, version
4.1.0 (https://www.naturalearthdata.com/; public domain: "No permission is
needed to use Natural Earth"), as the TopoJSON ``countries-50m.json`` in npm's
``world-atlas`` 2.0.2 package (ISC licence for the packaging). Get it with::

    cd /tmp && npm pack world-atlas@2.0.2        # -> world-atlas-2.0.2.tgz
    pip install pycountry                          # this script only
    python scripts/make_countries.py /tmp/world-atlas-2.0.2.tgz

1:50m rather than the package's 1:10m: borders within ~1-2 km, at a fifth of the points
(1:10m would also need ISO fixes for its extra disputed and leased areas, and its
world-atlas copy is quantised to the same ~300 m grid).

What the script does:
- decodes the TopoJSON arcs. world-atlas 2 removed Natural Earth's cuts at
  the antimeridian (its polygons are spherical, for d3-geo), so every ring is
  unwrapped in longitude, the ring that encircles the South Pole
  (Antarctica) is closed along latitude -90, and the planar polygons are cut
  back into [-180, 180] (Russia's Chukotka, Fiji, ...);
- maps world-atlas's ISO 3166-1 *numeric* ids to alpha-2/alpha-3 codes and
  aliases with ``pycountry``. Entries without an ISO id are fixed by hand in
  ``NO_ISO_ID`` (see the comments there: Kosovo, N. Cyprus, Somaliland,
  Siachen Glacier, Indian Ocean Territories);
- splits off parts that ISO 3166 and GeoNames code differently from the
  entry, so polygon and GeoNames labels share one code system: every part of
  a multi-part entry except its largest takes the code most GeoNames towns
  inside it carry, when they outnumber the entry's own code. This splits
  off overseas territories (French Guiana GF, Réunion RE, Svalbard SJ,
  Bonaire BQ, ...), gives Borkum (drawn with the Netherlands at 1:50m) to
  Germany, and labels Crimea UA: Natural Earth 4.1 draws it with Russia
  (de facto), ISO 3166, GeoNames and the UN with Ukraine. Parts without
  towns take the code of the nearest town only when it is such an overseas
  code of the same entry (a Guadeloupe islet joins GP). The decisions are
  printed. Enclaves inside one polygon at 1:50m (Gibraltar in Spain) stay
  with the enclosing country;
- merges outlines smaller than ``POINT_SIZED_KM2`` (Vatican City and Monaco,
  whose 1:50m outlines lie beside the real ones) into their neighbour; they
  and the countries missing at 1:50m are labelled by GeoNames places;
- rounds coordinates to ``--decimals`` (4 = ~11 m; the source is quantised
  to ~0.0036 x 0.0017 degrees anyway);
- stores ``iso_names`` (ISO-2 -> short English name of every ISO 3166-1
  country; Natural Earth's name where it has the country) for naming
  countries too small for 1:50m (Tuvalu, Gibraltar, ...).

The output (format: ``write_asset``) is deterministic: sorted, fixed zip time stamps.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "geospot" / "assets" / "ne_50m_countries.npz"
# Natural Earth entries with no ISO 3166-1 numeric id: name -> (iso2, iso3).
NO_ISO_ID = {
    # Not in ISO 3166; XK / XKX is the user-assigned code the EU, GeoNames and most software use.
    "Kosovo": ("XK", "XKX"),
    # Breakaway states inside the ISO country they belong to; keep Natural Earth's own ISO-3
    # (CYN, SOL) so the entries stay distinguishable, but label them with that country's ISO-2
    # so polygon labels agree with GeoNames (which codes their towns CY / SO).
    "N. Cyprus": ("CY", "CYN"),
    "Somaliland": ("SO", "SOL"),
    # Disputed between India and Pakistan, held by India since 1984 (Natural Earth's de facto view).
    "Siachen Glacier": ("IN", "IND"),
    # Christmas Island (CX) and the Cocos (Keeling) Islands (CC) in one entry: split by longitude
    # below (PART_CODES); this code is only the fallback.
    "Indian Ocean Ter.": ("CX", "CXR"),
}
# Entries that share their country's ISO-3 and so merge into its entry (under its name).
ABSORBED = ("Siachen Glacier", "Ashmore and Cartier Is.")
# Entries whose parts get a code by a rule: name -> function(representative lon, lat) -> iso2.
PART_CODES = {"Indian Ocean Ter.": lambda lon, lat: "CX" if lon > 100.0 else "CC"}
# Outlines under this area (at 1:50m: Vatican City, Monaco) are displaced by more than their own
# size (the Vatican's lies 1.5 km west of it, in Rome's Monteverde): they are merged into the
# country around them, and geospot.geo.geocode labels these countries by their GeoNames places.
POINT_SIZED_KM2 = 15.0
# Antarctica's ring runs along latitude -89.999 (the TopoJSON grid's last row): snap to the pole.
POLE_SNAP = 89.99


def read_topology(source: Path, name: str = "countries-50m.json") -> dict:
    if source.suffix in (".tgz", ".gz"):
        with tarfile.open(source) as tar:
            return json.load(tar.extractfile(f"package/{name}"))
    return json.loads((source / name if source.is_dir() else source).read_text(encoding="utf-8"))


def decode_arcs(topo: dict) -> list[np.ndarray]:
    """Absolute (lon, lat) of every arc: TopoJSON arcs are delta-encoded on a quantised grid."""
    scale = np.array(topo["transform"]["scale"])
    shift = np.array(topo["transform"]["translate"])
    return [np.cumsum(np.asarray(a, dtype=np.float64), axis=0) * scale + shift for a in topo["arcs"]]


def ring(arcs: list[np.ndarray], ids: list[int]) -> np.ndarray:
    """A ring from arc indices (``~i`` = arc ``i`` reversed); consecutive arcs share an end point."""
    parts = []
    for k, i in enumerate(ids):
        a = arcs[i] if i >= 0 else arcs[~i][::-1]
        parts.append(a if k == 0 else a[1:])
    return np.concatenate(parts)


def planar(coords: np.ndarray):
    """A spherical ring as planar polygons within lon [-180, 180] (antimeridian cut, pole closed)."""
    import shapely
    from shapely.geometry import Polygon, box

    lon, lat = coords[:, 0].copy(), coords[:, 1].copy()
    lat[np.abs(lat) >= POLE_SNAP] = np.sign(lat[np.abs(lat) >= POLE_SNAP]) * 90.0
    # Unwrap: a step of more than 180 degrees is a crossing of the antimeridian.
    step = np.diff(lon)
    lon = np.concatenate([[lon[0]], lon[0] + np.cumsum(step - 360.0 * np.round(step / 360.0))])
    xy = np.c_[lon, lat]
    if abs(lon[-1] - lon[0]) > 180.0:  # wound once around a pole: close the ring along it
        pole = -90.0 if lat.mean() < 0 else 90.0
        xy = np.vstack([xy, [[lon[-1], pole], [lon[0], pole]]])
    poly = shapely.make_valid(Polygon(xy))
    pieces = []
    for k in (-1, 0, 1):  # the part in each 360-degree window, moved back into [-180, 180]
        piece = shapely.intersection(poly, box(-180.0 + 360 * k, -90.0, 180.0 + 360 * k, 90.0))
        if not piece.is_empty:
            pieces.append(shapely.transform(piece, lambda p, k=k: p - [360.0 * k, 0.0]))
    return polygons_only(shapely.union_all(pieces))


def polygons_only(geom):
    """Drop the points and lines that intersections and make_valid leave behind."""
    import shapely

    keep = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon") and g.area > 0]
    return shapely.union_all(keep) if keep else shapely.Polygon()


def feature_geometry(arcs, geometry: dict):
    import shapely

    polys = geometry["arcs"] if geometry["type"] == "MultiPolygon" else [geometry["arcs"]]
    pieces = []
    for rings in polys:  # each polygon on its own (an island in a lake is another polygon)
        # Even-odd rule: a hole is removed from its shell, and Antarctica, whose "shell" is a
        # tiny ring around the pole with the coast as its "hole" (spherical winding), becomes
        # the land between coast and pole.
        shell = planar(ring(arcs, rings[0]))
        for r in rings[1:]:
            shell = shapely.symmetric_difference(shell, planar(ring(arcs, r)))
        pieces.append(shell)
    return polygons_only(shapely.make_valid(shapely.union_all(pieces)))


def iso_of(name: str, numeric: str | None) -> tuple[str, str, list[str]]:
    import pycountry

    if numeric is None:
        if name not in NO_ISO_ID:
            raise SystemExit(f"Natural Earth entry {name!r} has no ISO numeric id; add it to NO_ISO_ID")
        return (*NO_ISO_ID[name], [])
    country = pycountry.countries.get(numeric=numeric)
    if country is None:
        raise SystemExit(f"no ISO 3166 country for Natural Earth entry {name!r} (numeric {numeric})")
    aliases = {getattr(country, attr, None) for attr in ("name", "official_name", "common_name")}
    return country.alpha_2, country.alpha_3, sorted(a for a in aliases if a and a != name)


def geonames_places():
    """(lon, lat, cc, k-d tree on unit vectors) of the GeoNames towns geospot labels with."""
    import pandas as pd
    from scipy.spatial import cKDTree

    from geospot.geo.distance import latlon_to_xyz
    from geospot.geo.geocode import _table_path

    t = pd.read_csv(_table_path(), usecols=["lat", "lon", "cc"], dtype={"cc": str}, keep_default_na=False)
    lat, lon = t["lat"].to_numpy(np.float64), t["lon"].to_numpy(np.float64)
    return lon, lat, t["cc"].to_numpy(object), cKDTree(latlon_to_xyz(lat, lon))


def split_parts(name: str, iso2: str, geom, places, entry_codes: set[str]) -> dict[str, object]:
    """{iso2: geometry} of one Natural Earth entry, overseas parts split off (see the module doc)."""
    import shapely

    from geospot.geo.distance import latlon_to_xyz

    parts = sorted(shapely.get_parts(geom), key=lambda p: -p.area)
    if name in PART_CODES:
        codes = [PART_CODES[name](*p.representative_point().coords[0]) for p in parts]
    else:
        lon, lat, cc, tree = places
        majority: list[str | None] = []
        for p in parts:
            x0, y0, x1, y1 = p.bounds
            near = np.flatnonzero((lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1))
            counts = Counter(cc[near[shapely.contains_xy(p, lon[near], lat[near])]])
            top = counts.most_common(1)[0] if counts else None
            # A tie keeps the entry's own code (one Japanese and one Russian town on Kunashir: RU).
            majority.append(None if top is None else top[0] if top[1] > counts[iso2] else iso2)
        # Parts without towns only join an overseas code found in another part of this entry
        # (a Guadeloupe islet joins GP), never a neighbour that has an entry of its own.
        overseas = {c for c in majority if c} - entry_codes
        codes = [iso2]
        for p, code in zip(parts[1:], majority[1:]):
            if code is None:
                x, y = p.representative_point().coords[0]
                code = cc[tree.query(latlon_to_xyz(np.array([y]), np.array([x])))[1][0]]
                code = code if code in overseas else iso2
            codes.append(code)
    out: dict[str, list] = {}
    for p, code in zip(parts, codes):
        out.setdefault(code, []).append(p)
    if len(out) > 1:
        print(f"  {name} ({iso2}): parts split as " + ", ".join(f"{c}: {len(v)}" for c, v in out.items()),
              file=sys.stderr)
    return {c: shapely.union_all(v) for c, v in out.items()}


def area_km2(geom) -> float:
    """Approximate area (lon/lat degrees squared scaled by the latitude's cosine)."""
    import shapely

    lat = shapely.centroid(geom).y
    return geom.area * 111.32**2 * np.cos(np.radians(lat))


def write_asset(path: Path, features: list[dict], meta: dict) -> None:
    """A zip of .npy arrays (``np.load``-able, no pickle) + meta.json; loads in ~30 ms (GeoJSON: ~1 s).

    coords.npy: int32 (n, 2) lon/lat in units of ``meta["unit_deg"]``, delta-encoded over the
    whole array (cumsum to decode; small deltas compress well); ring/polygon/geometry_offsets.npy:
    shapely ragged-array offsets of one MultiPolygon per feature (``shapely.from_ragged_array``).
    """
    import shapely

    geoms = [g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g]) for g in (f.pop("geometry") for f in features)]
    _, coords, (rings, polys, geos) = shapely.to_ragged_array(geoms)
    q = np.round(coords / meta["unit_deg"]).astype(np.int64)
    arrays = {"coords": np.diff(q, axis=0, prepend=0).astype(np.int32), "ring_offsets": rings.astype(np.int32),
              "polygon_offsets": polys.astype(np.int32), "geometry_offsets": geos.astype(np.int32)}
    meta = dict(meta, features=features)
    # Fixed time stamps keep the output byte-identical between runs.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a, allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{name}.npy", (1980, 1, 1, 0, 0, 0)), buf.getvalue(), zipfile.ZIP_DEFLATED)
        z.writestr(zipfile.ZipInfo("meta.json", (1980, 1, 1, 0, 0, 0)),
                   json.dumps(meta, ensure_ascii=False, indent=0).encode(), zipfile.ZIP_DEFLATED)


def main(argv: list[str] | None = None) -> int:
    import pycountry
    import shapely

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="world-atlas .tgz, its unpacked package folder, or countries-50m.json")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--decimals", type=int, default=4, help="coordinate decimals (4 = ~11 m)")
    args = parser.parse_args(argv)

    topo = read_topology(args.source)
    arcs = decode_arcs(topo)
    places = geonames_places()
    features, ne_names, parts = [], {}, {}  # parts: iso3 -> [properties, geometries]
    entries = topo["objects"]["countries"]["geometries"]
    entry_codes = {iso_of(g["properties"]["name"], g.get("id"))[0] for g in entries}
    for g in entries:
        name = g["properties"]["name"]
        iso2, iso3, aliases = iso_of(name, g.get("id"))
        if name not in ("N. Cyprus", "Somaliland", *ABSORBED):
            ne_names.setdefault(iso2, name)
        for code, geom in split_parts(name, iso2, feature_geometry(arcs, g), places, entry_codes).items():
            props = {"name": name, "iso2": iso2, "iso3": iso3, "aliases": aliases}
            if code != iso2 or name in PART_CODES:  # an ISO country of its own, or joins its entry below
                c = pycountry.countries.get(alpha_2=code)
                props = {"name": getattr(c, "common_name", None) or c.name, "iso2": code, "iso3": c.alpha_3,
                         "aliases": sorted({c.name} - {getattr(c, "common_name", None)})}
            slot = parts.setdefault(props["iso3"], [props, []])
            slot[1].append(geom)
            if slot[0]["name"] in ABSORBED:  # the country's own entry names the merged one
                slot[0] = props
    merged = {iso3: shapely.union_all(geoms) for iso3, (_, geoms) in parts.items()}
    for iso3 in [k for k, g in merged.items() if area_km2(g) < POINT_SIZED_KM2]:
        # Displaced by more than its own size: give the outline to the neighbour sharing most of
        # its edge (an island like the Cocos Islands has none and keeps its outline).
        shared = {k: shapely.intersection(g.boundary, merged[iso3].buffer(1e-3)).length
                  for k, g in merged.items() if k != iso3}
        host = max(shared, key=shared.get)
        if shared[host] == 0:
            continue
        tiny = merged.pop(iso3)
        merged[host] = shapely.union(merged[host], tiny)
        print(f"  {parts[iso3][0]['name']}: {area_km2(tiny):.1f} km2, outline merged into "
              f"{parts[host][0]['name']} (labelled by GeoNames places instead)", file=sys.stderr)
    for iso3, geom in merged.items():
        geom = shapely.set_precision(shapely.make_valid(geom), 10.0 ** -args.decimals)
        features.append(dict(parts[iso3][0], geometry=polygons_only(geom)))
    features.sort(key=lambda f: (f["name"], f["iso2"]))
    names = {c.alpha_2: getattr(c, "common_name", None) or c.name for c in pycountry.countries}
    names.update({"XK": "Kosovo", **ne_names})
    meta = {
        "source": "Natural Earth 1:50m Admin 0 - Countries v4.1.0 (public domain), via npm world-atlas "
                  "2.0.2; cut at the antimeridian and split by scripts/make_countries.py",
        "unit_deg": 10.0 ** -args.decimals,
        "iso_names": dict(sorted(names.items())),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_asset(args.out, features, meta)
    print(f"{args.out}: {len(features)} entries, {args.out.stat().st_size / 1024:.0f} KiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
