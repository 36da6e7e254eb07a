"""Does the default recipe hold up on photos from elsewhere? Leave-one-collection-out
over every Street View collection in ../shared/data: for each collection, train
exactly what `geospot train` trains (cells, head, calibration with inner
leave-one-collection-out folds) on the OTHER collections, and score single photos
of the held-out one beside the skeptic's baselines from the same run.

    python benchmarks/bench_generalization.py [--encoder efficientnet-lite0-ms] [--fuse none] [--out runs/loco]

Prints one row per held-out collection (GeoScore with a 95% bootstrap interval over
places, the medoid / random / article-recipe baselines, median error, and the
coverage of the 50% and 90% radii), then every estimate pooled over all
held-out photos. Embeddings are cached, so a rerun only retrains heads.
"""
from __future__ import annotations

import argparse
import os
import time

from _common import COLLECTIONS, collection_data, print_table

from geospot.encoders import DEFAULT_ENCODER
from geospot.train.config import TrainConfig
from geospot.workflows.crossval import cross_validate
from geospot.workflows.scoring import MEDOID, RANDOM, RECIPE
from geospot.workflows.training import DEFAULT_CELLS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--encoder", default=DEFAULT_ENCODER)
    ap.add_argument("--collections", nargs="+", default=list(COLLECTIONS))
    ap.add_argument("--fuse", default="none", choices=["none", "embeddings", "probs"],
                    help="none: every photo alone, as users locate them (default)")
    ap.add_argument("--estimate", default=None, help="main estimate (default: the library default)")
    ap.add_argument("--out", help="write the cross-validation report (JSON/MD, predictions.csv) here")
    args = ap.parse_args()
    manifest, emb = collection_data(args.collections, args.encoder)
    t0 = time.time()
    report = cross_validate(manifest, group_by="collection", encoder=args.encoder, cell_params=DEFAULT_CELLS,
                            config=TrainConfig(), fuse=args.fuse, estimate=args.estimate, embeddings=emb,
                            out_dir=args.out, progress=False)
    main_name = report["main_method"]
    rows = []
    for f in report["folds"]:
        m = f["methods"]
        ci = m[main_name]["ci"]["geoscore"]
        cal = f["calibration"]
        rows.append([f["fold"], f["n_test_places"], f"{m[main_name]['geoscore']:.0f} [{ci[0]:.0f}, {ci[1]:.0f}]",
                     f"{m[MEDOID]['geoscore']:.0f}", f"{m[RANDOM]['geoscore']:.0f}", f"{m[RECIPE]['geoscore']:.0f}",
                     f"{m[main_name]['median_km']:.0f}", f"{m[MEDOID]['median_km']:.0f}",
                     f"{100 * cal['coverage_50']:.0f}%", f"{100 * cal['coverage_90']:.0f}%",
                     f"{100 * f['comparisons'][MEDOID]['relative']:+.0f}%",
                     "-" if f.get("unfamiliar") is None else f"{f['unfamiliar']}"])
    load = os.getloadavg()[0]
    print_table(["held out", "photos", f"GeoScore [95% CI]", "medoid", "random", "recipe", "median km",
                 "medoid km", "cov50", "cov90", "vs medoid", "unfamiliar"], rows,
                title=f"Leave-one-collection-out, {args.encoder}, main estimate {main_name} "
                      f"(fuse={args.fuse}; {time.time() - t0:.0f} s, load {load:.1f})")
    print()
    pooled = []
    for name, m in report["pooled"].items():
        ci = m["ci"]["geoscore"]
        pooled.append([name, f"{m['geoscore']:.0f} [{ci[0]:.0f}, {ci[1]:.0f}]", f"{m['median_km']:.0f}",
                       f"{100 * m['acc_200km']:.1f}", f"{100 * m['acc_750km']:.1f}", f"{100 * m['acc_2500km']:.1f}"])
    print_table(["method (pooled over held-out photos)", "GeoScore [95% CI]", "median km", "@200km %",
                 "@750km %", "@2500km %"], pooled)
    for c in report["comparisons"].values():
        print(f"{main_name} {c['text']}")


if __name__ == "__main__":
    main()
