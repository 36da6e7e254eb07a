"""Accuracy benchmark: `geospot cv` on the real Street View sets, the current
default recipe side by side with the skeptic's baselines (training medoid,
random training location, the article's recipe: plain cross-entropy + top cell).

    python benchmarks/bench_accuracy.py [--folds 5] [--datasets streetview-global streetview-croatia]

Embeddings are cached under $GEOSPOT_CACHE, so a rerun only retrains heads.
"""
from __future__ import annotations

import argparse
import time

from _common import print_table, require_shared_data

from geospot.data.manifest import read_manifest
from geospot.pipeline import DEFAULT_CELLS, DEFAULT_ENCODER, cross_validate
from geospot.train.fit import TrainConfig

DATASET_CELLS = {
    # Croatia is one small country: finer cells than the global default
    "streetview-croatia": {"scheme": "s2", "min_per_cell": 5, "max_per_cell": 25},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--datasets", nargs="+", default=["streetview-global", "streetview-croatia"])
    ap.add_argument("--encoder", default=DEFAULT_ENCODER)
    args = ap.parse_args()
    data = require_shared_data()
    rows = []
    for name in args.datasets:
        manifest = read_manifest(data / name / "manifest.csv")
        cells = DATASET_CELLS.get(name, DEFAULT_CELLS)
        t0 = time.time()
        report = cross_validate(manifest, folds=args.folds, encoder=args.encoder, cell_params=cells,
                                config=TrainConfig(), progress=True)
        seconds = time.time() - t0
        for method, summary in report["cv"].items():
            def pm(key, scale=1.0, fmt="{:.1f}"):
                if key not in summary:
                    return "-"
                return (fmt + "±" + fmt).format(scale * summary[key]["mean"], scale * summary[key]["std"])
            rows.append([name, method, pm("median_km", fmt="{:.0f}"), pm("acc_25km", 100), pm("acc_200km", 100),
                         pm("acc_750km", 100), pm("acc_2500km", 100), pm("geoscore", fmt="{:.0f}"),
                         pm("top1", 100), pm("country_acc", 100)])
        print(f"{name}: {report['dataset']['n_places']} places, {len(report['folds'])} folds, {seconds:.0f} s")
    print()
    print_table(["dataset", "method", "median km", "@25km %", "@200km %", "@750km %", "@2500km %",
                 "GeoScore", "cell@1 %", "country %"], rows,
                title=f"Group {args.folds}-fold CV by location_id, encoder {args.encoder} (mean ± std over folds)")


if __name__ == "__main__":
    main()
