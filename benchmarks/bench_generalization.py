"""Does the default recipe hold up on photos from elsewhere? Leave-one-collection-out
over every Street View collection in ../shared/data: for each collection, train
exactly what `geospot train` trains (cells, head, calibration with inner
leave-one-collection-out folds) on the OTHER collections, and score single photos
of the held-out one beside the skeptic's baselines from the same run.

    python benchmarks/bench_generalization.py [--encoder efficientnet-lite0-ms] [--fuse none] [--out runs/loco]
    python benchmarks/bench_generalization.py --against efficientnet-lite0   # + the paired change per collection

Prints one row per held-out collection (GeoScore with a 95% bootstrap interval over
places, the medoid / random / article-recipe baselines, median error, and the
coverage of the 50% and 90% radii), then every estimate pooled over all
held-out photos. Embeddings are cached, so a rerun only retrains heads.
`--against ENCODER` runs the same protocol with another encoder too and prints the
change of GeoScore photo by photo (paired 95% bootstrap intervals over places), per
held-out collection and pooled: how encoders are chosen.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import COLLECTIONS, collection_data, print_table

from geospot.encoders import DEFAULT_ENCODER
from geospot.eval.bootstrap import describe_paired, paired_geoscore
from geospot.eval.metrics import geoscore
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
    ap.add_argument("--against", metavar="ENCODER", help="also run ENCODER and print the paired change per collection")
    args = ap.parse_args()
    manifest, emb = collection_data(args.collections, args.encoder)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        report = _loco(manifest, emb, args.encoder, args, out)
        predictions = pd.read_csv(Path(out) / "predictions.csv")
        _print(report, args, time.time() - t0)
    if args.against:
        _, other = collection_data(args.collections, args.against)
        with tempfile.TemporaryDirectory() as tmp:
            base = _loco(manifest, other, args.against, args, tmp)
            _print_paired(manifest, predictions, pd.read_csv(Path(tmp) / "predictions.csv"), args, base)


def _loco(manifest, emb, encoder: str, args, out: str) -> dict:
    return cross_validate(manifest, group_by="collection", encoder=encoder, cell_params=DEFAULT_CELLS,
                          config=TrainConfig(), fuse=args.fuse, estimate=args.estimate, embeddings=emb,
                          out_dir=out, progress=False)


def _print(report: dict, args, seconds: float) -> None:
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
                      f"(fuse={args.fuse}; {seconds:.0f} s, load {load:.1f})")
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


def _print_paired(manifest, new: pd.DataFrame, old: pd.DataFrame, args, base: dict) -> None:
    """GeoScore of `--encoder` minus `--against`, photo by photo, per held-out collection and pooled."""
    if not (new["path"].equals(old["path"]) and new["fold"].equals(old["fold"])):
        raise SystemExit("the two encoders' runs scored different photos (a photo one encoder could not read)")
    group_of = dict(zip(np.asarray(manifest.paths, dtype=object), np.asarray(manifest.groups)))
    groups = np.array([group_of[p] for p in new["path"]])
    medoid = {f["fold"]: f["methods"][MEDOID]["geoscore"] for f in base["folds"]}
    medoid["pooled"] = base["pooled"][MEDOID]["geoscore"]
    rows = []
    for fold in list(dict.fromkeys(new["fold"])) + ["pooled"]:
        m = np.ones(len(new), bool) if fold == "pooled" else (new["fold"] == fold).to_numpy()
        e_new, e_old = new["error_km"].to_numpy()[m], old["error_km"].to_numpy()[m]
        d = paired_geoscore(e_new, e_old, groups=groups[m])
        rows.append([fold, int(m.sum()), f"{geoscore(e_old).mean():.0f}", f"{geoscore(e_new).mean():.0f}",
                     f"{d['mean']:+.0f} [{d['ci'][0]:+.0f}, {d['ci'][1]:+.0f}]", f"{medoid[fold]:.0f}"])
    print()
    print_table(["held out", "photos", args.against, args.encoder, "change [95% CI]", "medoid"], rows,
                title=f"Paired, photo by photo: {args.encoder} against {args.against} (main estimate of each run)")
    d = paired_geoscore(new["error_km"], old["error_km"], groups=groups)
    print(f"{args.encoder} " + describe_paired(args.against, d))


if __name__ == "__main__":
    main()
