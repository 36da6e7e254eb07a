#!/usr/bin/env python
"""Regenerate geospot's vendored country outlines (src/geospot/assets/ne_110m_countries.geojson.gz).

Source: Natural Earth 1:110m Cultural Vectors, Admin 0 - Countries
(https://www.naturalearthdata.com/), as shipped in the geopandas 0.14.x wheel
on PyPI at ``geopandas/datasets/naturalearth_lowres/naturalearth_lowres.shp``
(fields: pop_est, continent, name, iso_a3, gdp_md_est). Natural Earth is in
the public domain ("No permission is needed to use Natural Earth"), so the
derived file may be vendored and redistributed freely.

What the script does:
- reads the shapefile (with ``pyshp``) straight from the wheel or a folder;
- adds ISO 3166-1 alpha-2 codes and extra names (aliases) from ``pycountry``;
  Natural Earth's quirks are fixed by hand: Kosovo (iso_a3 -99) becomes
  XK / XKX (the user-assigned code everyone uses), and the breakaway
  "N. Cyprus" (CYN) and "Somaliland" (SOL) keep their Natural Earth ISO-3 but
  get the ISO-2 of the country ISO 3166 puts them in (CY, SO), so that
  ``country_at`` agrees with GeoNames-based reverse geocoding;
- simplifies the outlines (``--tolerance`` degrees, topology preserved) and
  rounds coordinates to ``--decimals`` places;
- stores ``iso_names``, an ISO-2 -> short English name table of every ISO
  3166-1 country (Natural Earth's name where it has the country), as a
  foreign member of the FeatureCollection, for naming countries that are too
  small for the 1:110m outlines (Singapore, Malta, ...).

Run (needs ``pip install pyshp pycountry``, used by this script only; the
runtime reads the output with json + gzip + shapely)::

    pip download geopandas==0.14.4 --no-deps -d /tmp/gpd
    python scripts/make_countries.py /tmp/gpd/geopandas-0.14.4-py3-none-any.whl
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
import zipfile
from pathlib import Path

SHP_IN_WHEEL = "geopandas/datasets/naturalearth_lowres/naturalearth_lowres"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "geospot" / "assets" / "ne_110m_countries.geojson.gz"
# Natural Earth entries whose ISO codes need a hand fix: name -> (iso2, iso3).
ISO_FIXES = {"Kosovo": ("XK", "XKX"), "N. Cyprus": ("CY", "CYN"), "Somaliland": ("SO", "SOL")}


def open_shapefile(source: Path):
    """A pyshp Reader over the shapefile in a geopandas wheel, a folder, or at a .shp path."""
    import shapefile

    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            parts = {ext: wheel.read(f"{SHP_IN_WHEEL}.{ext}") for ext in ("shp", "shx", "dbf", "cpg")}
    else:
        if source.is_dir():
            source = source / "naturalearth_lowres.shp"
        parts = {ext: source.with_suffix(f".{ext}").read_bytes() for ext in ("shp", "shx", "dbf", "cpg")}
    # The .cpg names the text encoding of the attribute table (ISO-8859-1 here: "Côte d'Ivoire").
    encoding = parts["cpg"].decode("ascii").strip()
    return shapefile.Reader(shp=io.BytesIO(parts["shp"]), shx=io.BytesIO(parts["shx"]),
                            dbf=io.BytesIO(parts["dbf"]), encoding=encoding)


def iso_codes(name: str, iso3: str) -> tuple[str, str, list[str]]:
    """(iso2, iso3, aliases) of one Natural Earth country."""
    import pycountry

    if name in ISO_FIXES:
        iso2, iso3 = ISO_FIXES[name]
        return iso2, iso3, []
    country = pycountry.countries.get(alpha_3=iso3)
    if country is None:
        raise SystemExit(f"no ISO 3166 country for Natural Earth entry {name!r} (iso_a3={iso3!r}); "
                         "add it to ISO_FIXES")
    aliases = {getattr(country, attr, None) for attr in ("name", "official_name", "common_name")}
    return country.alpha_2, country.alpha_3, sorted(a for a in aliases if a and a != name)


def iso_names(ne_names: dict[str, str]) -> dict[str, str]:
    import pycountry

    names = {c.alpha_2: getattr(c, "common_name", None) or c.name for c in pycountry.countries}
    names["XK"] = "Kosovo"
    names.update(ne_names)
    return dict(sorted(names.items()))


def rounded(coords, decimals: int):
    if isinstance(coords[0], (int, float)):
        return [round(float(v), decimals) for v in coords]
    return [rounded(c, decimals) for c in coords]


def main(argv: list[str] | None = None) -> int:
    import shapely
    from shapely.geometry import mapping, shape

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="geopandas wheel, folder, or naturalearth_lowres.shp")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--tolerance", type=float, default=0.02, help="simplification tolerance (degrees)")
    parser.add_argument("--decimals", type=int, default=4, help="coordinate decimals (4 = ~11 m)")
    args = parser.parse_args(argv)

    reader = open_shapefile(args.source)
    features, ne_names = [], {}
    for record, shp in zip(reader.records(), reader.shapes()):
        name = record["name"]
        iso2, iso3, aliases = iso_codes(name, record["iso_a3"])
        geometry = shape(shp.__geo_interface__)
        geometry = shapely.make_valid(geometry.simplify(args.tolerance, preserve_topology=True))
        if geometry.geom_type not in ("Polygon", "MultiPolygon"):  # make_valid may add slivers
            geometry = shapely.unary_union([g for g in shapely.get_parts(geometry)
                                            if g.geom_type in ("Polygon", "MultiPolygon")])
        geo = mapping(geometry)
        geo = {"type": geo["type"], "coordinates": rounded(json.loads(json.dumps(geo["coordinates"])),
                                                           args.decimals)}
        features.append({"type": "Feature",
                         "properties": {"name": name, "iso2": iso2, "iso3": iso3, "aliases": aliases,
                                        "continent": record["continent"]},
                         "geometry": geo})
        if name not in ISO_FIXES or name == "Kosovo":
            ne_names[iso2] = name
    features.sort(key=lambda f: f["properties"]["name"])
    collection = {
        "type": "FeatureCollection",
        "source": "Natural Earth 1:110m Admin 0 - Countries (public domain), via the geopandas 0.14 "
                  "naturalearth_lowres dataset; simplified by scripts/make_countries.py",
        "iso_names": iso_names(ne_names),
        "features": features,
    }
    data = json.dumps(collection, separators=(",", ":"), ensure_ascii=False).encode()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # No file name and mtime=0 keep the output byte-identical between runs.
    with open(args.out, "wb") as raw:
        with gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
            gz.write(data)
    print(f"{args.out}: {len(features)} countries, {args.out.stat().st_size / 1024:.0f} KiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
