"""The review report (CSV, GeoJSON, offline HTML) and the reviewed CSV that `--apply` reads.

The CSV is the contract: a user edits `lat`/`lon` or flips `decision`
(write | skip) and runs `geospot geotag --apply proposals.csv`. Only `path`,
`decision`, `lat` and `lon` are required; `radius90_km` (written as the GPS
horizontal positioning error) and `method` are used when present. Every bad
row gets one message naming the row, and the good rows still apply.
"""
from __future__ import annotations

import csv
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from geospot.geotag.fix import FixError, GpsFix
from geospot.geotag.plan import Proposal

COLUMNS = ["path", "decision", "status", "reason", "lat", "lon", "radius50_km", "radius90_km", "top_prob",
           "country", "region", "city", "group", "method"]
DECISIONS = ("write", "skip")


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:.1f}"
    return str(v)


def write_report(proposals: Sequence[Proposal], out_dir: str | Path) -> dict[str, Path]:
    """proposals.csv, proposals.geojson and proposals.html in `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "proposals.csv", "geojson": out / "proposals.geojson", "html": out / "proposals.html"}
    rows = [p.to_row() for p in proposals]
    with open(paths["csv"], "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in COLUMNS})
    features = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
         "properties": {k: r.get(k) for k in COLUMNS if k not in ("lat", "lon")}}
        for r in rows if r["lat"] is not None
    ]
    paths["geojson"].write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1),
                                encoding="utf-8")
    paths["html"].write_text(_html(rows), encoding="utf-8")
    return paths


def _svg_map(rows: list[dict]) -> str:
    """Equirectangular dots with a 30-degree graticule: no tiles, no network."""
    parts = ['<svg viewBox="-180 -90 360 180" width="720" height="360" style="background:#eef4f8">']
    for x in range(-150, 180, 30):
        parts.append(f'<line x1="{x}" y1="-90" x2="{x}" y2="90" stroke="#ccd" stroke-width="0.3"/>')
    for y in range(-60, 90, 30):
        parts.append(f'<line x1="-180" y1="{y}" x2="180" y2="{y}" stroke="#ccd" stroke-width="0.3"/>')
    for i, r in enumerate(rows):
        if r["lat"] is None:
            continue
        colour = "#1a7f37" if r["decision"] == "write" else "#b35900"
        parts.append(f'<a href="#p{i}"><circle cx="{r["lon"]:.4f}" cy="{-r["lat"]:.4f}" r="1.6" fill="{colour}">'
                     f'<title>{html.escape(r["path"])}</title></circle></a>')
    return "".join(parts) + "</svg>"


def _html(rows: list[dict]) -> str:
    body = []
    for i, r in enumerate(rows):
        src = Path(r["path"]).resolve().as_uri()
        where = ", ".join(x for x in (r["city"], r["region"], r["country"]) if x)
        pos = f'{r["lat"]:.5f}, {r["lon"]:.5f}' if r["lat"] is not None else ""
        radius = f'{r["radius90_km"]:.0f} km' if r["radius90_km"] is not None else ""
        body.append(
            f'<tr id="p{i}" class="{r["decision"]}"><td><img src="{html.escape(src)}" loading="lazy" alt=""></td>'
            f'<td>{html.escape(r["path"])}</td><td>{r["decision"]}</td><td>{html.escape(r["status"])}</td>'
            f'<td>{pos}</td><td>{radius}</td><td>{html.escape(where)}</td><td>{html.escape(r["group"])}</td>'
            f'<td>{html.escape(r["reason"])}</td></tr>')
    n_write = sum(r["decision"] == "write" for r in rows)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>geospot geotag proposals</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 6px;font-size:13px}}img{{max-width:120px;max-height:90px}}tr.write td:nth-child(3){{color:#1a7f37}}
tr.skip td:nth-child(3){{color:#b35900}}</style></head><body>
<h1>geospot geotag: {n_write} of {len(rows)} photos proposed</h1>
<p>Edit <code>proposals.csv</code> (lat, lon, decision = write/skip) and run
<code>geospot geotag --apply proposals.csv</code>. Green dots: to write; orange: skipped.</p>
{_svg_map(rows)}
<table><tr><th></th><th>photo</th><th>decision</th><th>status</th><th>lat, lon</th><th>90% radius</th>
<th>near</th><th>album</th><th>reason</th></tr>
{"".join(body)}
</table></body></html>
"""


@dataclass
class Reviewed:
    row: int
    path: str
    fix_lat: float
    fix_lon: float
    radius_km: float | None
    method: str


def _number(value: str, what: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{what} {value!r} is not finite")
    return x


def read_reviewed(path: str | Path) -> tuple[list[Reviewed], list[str]]:
    """Rows marked `decision=write` and one error line per bad row (row numbers count the header as 1)."""
    path = Path(path)
    good, errors = [], []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("path", "lat", "lon") if c not in (reader.fieldnames or [])]
        if missing:
            return [], [f"{path}: missing column(s) {', '.join(missing)}"]
        for n, row in enumerate(reader, start=2):
            decision = (row.get("decision") or "write").strip().lower()
            try:
                if decision not in DECISIONS:
                    raise ValueError(f"decision {decision!r} is not write or skip")
                if decision == "skip":
                    continue
                photo = (row.get("path") or "").strip()
                if not photo:
                    raise ValueError("path is empty")
                if not Path(photo).is_file():
                    raise ValueError(f"{photo}: no such file")
                lat = _number((row.get("lat") or "").strip(), "lat")
                lon = _number((row.get("lon") or "").strip(), "lon")
                raw_r = (row.get("radius90_km") or "").strip()
                radius = _number(raw_r, "radius90_km") if raw_r else None
                if radius is not None and radius < 0:
                    raise ValueError(f"radius90_km {raw_r} is negative")
                GpsFix(lat, lon)  # range checks
                method = (row.get("method") or "").strip()
                good.append(Reviewed(n, photo, lat, lon, radius, method if method in ("exif", "sidecar") else ""))
            except (ValueError, FixError) as exc:
                errors.append(f"{path} row {n}: {exc}")
    return good, errors
