"""The bundled (or any) model on the only non-Street-View photos with true locations here.

    python benchmarks/bench_camera_photos.py [--model DIR]

Every photo under `../shared/data/photo-formats` whose EXIF carries GPS (18 camera
and phone photos from a handful of places: nine from one spot in Tuscany) is
located by the model; every estimate is scored beside the medoid of the
Street View training places (all five collections). Anecdotal by size: a
check that photos unlike the training data are handled, not a ranking.
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from _common import COLLECTIONS, print_table, require_shared_data

from geospot.data.images import ImageError, read_gps_exif
from geospot.geo.distance import geographic_medoid, haversine_km
from geospot.predict import Prediction, Predictor

GEOSCORE_KM = 1492.7


def gps_photos(root) -> tuple[list[str], np.ndarray]:
    paths, truth = [], []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            gps = read_gps_exif(f)
        except (ImageError, OSError, ValueError):
            gps = None
        if gps:
            paths.append(str(f))
            truth.append(gps)
    return paths, np.asarray(truth, float).reshape(-1, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder (default: bundled)")
    args = ap.parse_args()
    data = require_shared_data()
    paths, truth = gps_photos(data / "photo-formats")
    predictor = Predictor.load(args.model)
    results = predictor.predict(paths)
    ok = [i for i, r in enumerate(results) if isinstance(r, Prediction)]
    for i in sorted(set(range(len(paths))) - set(ok)):
        print(f"skipped {paths[i]}: {results[i].error}")
    preds = [results[i] for i in ok]
    t_lat, t_lon = truth[ok, 0], truth[ok, 1]
    places = pd.concat([pd.read_csv(data / f"streetview-{c}" / "manifest.csv") for c in COLLECTIONS])
    unique = np.unique(np.round(places[["lat", "lon"]].to_numpy(float), 5), axis=0)
    m_lat, m_lon = geographic_medoid(unique[:, 0], unique[:, 1])

    def row(name, lat, lon, r90=None):
        d = haversine_km(np.asarray(lat), np.asarray(lon), t_lat, t_lon)
        cov = f"{100 * np.mean(d <= r90):.0f}%" if r90 is not None else ""
        return [name, f"{np.mean(5000 * np.exp(-d / GEOSCORE_KM)):.0f}", f"{np.median(d):.0f}", cov]

    main_name = predictor.estimate
    fam = predictor.familiarity
    unfamiliar = sum(p.unfamiliar for p in preds)
    label = (f"{main_name}, {fam.fallback} if unfamiliar ({unfamiliar} of {len(preds)})" if fam is not None
             else main_name)
    rows = [row(f"geospot: {label} (the answer)", [p.lat for p in preds], [p.lon for p in preds],
                np.asarray([p.radius_km["90"] for p in preds]))]
    for name in preds[0].estimates:
        if name != main_name or fam is not None:
            rows.append(row(f"geospot: {name}", [p.estimates[name]["lat"] for p in preds],
                            [p.estimates[name]["lon"] for p in preds]))
    rows.append(row("baseline: medoid of the Street View training places", np.full(len(ok), m_lat),
                    np.full(len(ok), m_lon)))
    print_table(["estimate", "GeoScore", "median km", "inside 90% radius"], rows,
                title=f"{len(ok)} GPS-tagged photos of photo-formats (not Street View)")
    zero = sum(1 for p in preds if min(p.radius_km.values()) <= 0)
    print(f"answers with a 0 km radius: {zero}")
    if fam is not None:
        scores = ", ".join(f"{p.familiarity:.2f}" for p in sorted(preds, key=lambda p: p.familiarity))
        print(f"familiarity (threshold {fam.threshold:.3f}, the {100 * fam.quantile:g}% quantile of held-out "
              f"Street View): {scores}")


if __name__ == "__main__":
    main()
