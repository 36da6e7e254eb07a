"""Which recipe holds up on photos from elsewhere? Every variant is scored by
leave-one-collection-out over the shared Street View collections, exactly as
`bench_generalization.py` scores the default (calibration with inner folds,
single photos, baselines from the same run). One change from the default per row.

    python benchmarks/bench_recipes.py [--jobs 2] [--variants default "tau 500 km" ...]
    python benchmarks/bench_recipes.py --export DIR          # write embeddings as NPZ (to run elsewhere)
    python benchmarks/bench_recipes.py --npz DIR/efficientnet-lite0.npz DIR/efficientnet-lite2.npz --jobs 16

Prints, per variant, the GeoScore of the main estimate on each held-out
collection, its ratio to the medoid's on the worst collection, and the coverage
of the 90% radius; then every estimate for the default recipe. Variants run in
parallel processes (one thread each).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT = {"encoder": "efficientnet-lite0", "cells": {"scheme": "s2", "min_per_cell": 8, "max_per_cell": 60},
           "config": {}, "calibrate": True}
VARIANTS = {
    "default": {},
    "no calibration": {"calibrate": False},
    "cells s2 4/30 (finer)": {"cells": {"scheme": "s2", "min_per_cell": 4, "max_per_cell": 30}},
    "cells s2 16/120 (coarser)": {"cells": {"scheme": "s2", "min_per_cell": 16, "max_per_cell": 120}},
    "cells s2 30/250 (coarsest)": {"cells": {"scheme": "s2", "min_per_cell": 30, "max_per_cell": 250}},
    "tau 75 km (PIGEON; the default before)": {"config": {"tau_km": 75.0}},
    "tau 500 km": {"config": {"tau_km": 500.0}},
    "tau 1000 km": {"config": {"tau_km": 1000.0}},
    "loss ce": {"config": {"loss": "ce"}},
    "class weighting none": {"config": {"class_weighting": "none"}},
    "MLP head 512": {"config": {"hidden": 512}},
    "epochs 10": {"config": {"epochs": 10}},
    "epochs 60": {"config": {"epochs": 60}},
    "weight decay 1e-2": {"config": {"weight_decay": 1e-2}},
    "early stopping (val 10%)": {"config": {"val_fraction": 0.1}},
    "efficientnet-lite2": {"encoder": "efficientnet-lite2"},
    "lite0 + lite2 concatenated": {"encoder": "efficientnet-lite0+efficientnet-lite2"},
}


def _load(npz_files: list[str], encoder: str):
    """(manifest, embeddings) for an encoder, or for 'a+b' (concatenated, each L2-normalised)."""
    import pandas as pd

    from geospot.data.manifest import Manifest

    parts = []
    for name in encoder.split("+"):
        path = next((f for f in npz_files if Path(f).stem == name), None)
        if path is None:
            return None
        parts.append(np.load(path, allow_pickle=False))
    base = parts[0]
    emb = np.concatenate([p["emb"].astype(np.float32) / np.maximum(
        np.linalg.norm(p["emb"].astype(np.float32), axis=1, keepdims=True), 1e-12) for p in parts], axis=1)
    df = pd.DataFrame({"path": base["path"], "lat": base["lat"], "lon": base["lon"],
                       "location_id": base["location_id"], "collection": base["collection"]})
    ok = np.all([p["ok"] for p in parts], axis=0)
    keep = np.flatnonzero(ok)
    return Manifest(df.iloc[keep]), emb[keep]


def run_variant(name: str, spec: dict, npz_files: list[str], fuse: str, countries: bool) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from geospot.train.config import TrainConfig
    from geospot.workflows.crossval import cross_validate

    v = {**DEFAULT, **spec}
    loaded = _load(npz_files, v["encoder"])
    if loaded is None:
        return {"variant": name, "skipped": f"no embeddings for {v['encoder']}"}
    manifest, emb = loaded
    t0 = time.time()
    rep = cross_validate(manifest, group_by="collection", encoder=v["encoder"].split("+")[0],
                         cell_params=v["cells"], config=TrainConfig(**v["config"]), fuse=fuse,
                         calibrate=v["calibrate"], embeddings=emb, countries=countries, progress=False)
    out = {"variant": name, "seconds": time.time() - t0, "main": rep["main_method"], "folds": {}, "pooled": {}}
    for f in rep["folds"]:
        out["folds"][f["fold"]] = {
            "n": f["n_test_places"], "calibration": f["calibration"], "calibration_fit": f["calibration_fit"],
            "geoscore": {m: r["geoscore"] for m, r in f["methods"].items()},
            "median_km": {m: r["median_km"] for m, r in f["methods"].items()},
        }
    out["pooled"] = {m: {"geoscore": r["geoscore"], "ci": r["ci"]["geoscore"], "median_km": r["median_km"]}
                     for m, r in rep["pooled"].items()}
    out["comparisons"] = {k: {kk: c[kk] for kk in ("mean", "ci", "relative", "text")}
                          for k, c in rep["comparisons"].items()}
    return out


def export(out_dir: Path, encoders: list[str]) -> None:
    from _common import collection_data

    out_dir.mkdir(parents=True, exist_ok=True)
    for enc in encoders:
        manifest, emb = collection_data(encoder=enc)
        df = manifest.df
        np.savez(out_dir / f"{enc}.npz", emb=emb.embeddings.astype(np.float16), ok=emb.ok,
                 lat=df["lat"].to_numpy(), lon=df["lon"].to_numpy(), path=df["path"].astype(str).to_numpy(),
                 location_id=df["location_id"].astype(str).to_numpy(),
                 collection=df["collection"].astype(str).to_numpy())
        print(f"{enc}: {len(df)} rows -> {out_dir / (enc + '.npz')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", nargs="+", help="embeddings written by --export (default: compute through the cache)")
    ap.add_argument("--export", type=Path, help="write the embeddings of every encoder as NPZ here and stop")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--fuse", default="none")
    ap.add_argument("--no-countries", action="store_true", help="skip country accuracy (no reverse geocoder)")
    ap.add_argument("--json", type=Path, help="write all results here")
    args = ap.parse_args()
    encoders = ["efficientnet-lite0", "efficientnet-lite2"]
    if args.export:
        export(args.export, encoders)
        return
    npz = args.npz
    if not npz:
        tmp = Path(os.environ.get("GEOSPOT_CACHE", Path.home() / ".cache" / "geospot")) / "bench-npz"
        export(tmp, encoders)
        npz = [str(tmp / f"{e}.npz") for e in encoders]
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {name: pool.submit(run_variant, name, VARIANTS[name], npz, args.fuse, not args.no_countries)
                   for name in args.variants}
        results = []
        from concurrent.futures import as_completed

        names = {fut: name for name, fut in futures.items()}
        for fut in as_completed(names):
            name = names[fut]
            try:
                r = fut.result()
            except Exception as exc:  # one broken variant must not hide the others
                r = {"variant": name, "skipped": f"{type(exc).__name__}: {exc}"}
            results.append(r)
            print(f"done: {name} ({time.time() - t0:.0f} s): " + _one_line(r), file=sys.stderr, flush=True)
            if args.json:  # partial results survive a time limit
                args.json.write_text(json.dumps(results, indent=1))
        results.sort(key=lambda r: args.variants.index(r["variant"]))
    print_results(results)
    print(f"\n{time.time() - t0:.0f} s with {args.jobs} jobs; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _one_line(r: dict) -> str:
    if "skipped" in r:
        return "skipped: " + r["skipped"]
    main, med = r["main"], "baseline: training medoid"
    return ", ".join(f"{c} {f['geoscore'][main]:.0f}/{f['geoscore'][med]:.0f} cov90 "
                     f"{100 * f['calibration']['coverage_90']:.0f}%" for c, f in r["folds"].items())


def print_results(results: list[dict]) -> None:
    from _common import print_table

    medoid = "baseline: training medoid"
    ok = [r for r in results if "skipped" not in r]
    if not ok:
        print("no variant ran:", [r.get("skipped") for r in results])
        return
    cols = list(ok[0]["folds"])
    rows = []
    for r in ok:
        main = r["main"]
        gs = [r["folds"][c]["geoscore"][main] for c in cols]
        ratio = min(r["folds"][c]["geoscore"][main] / r["folds"][c]["geoscore"][medoid] for c in cols)
        cov90 = [r["folds"][c]["calibration"]["coverage_90"] for c in cols]
        rows.append([r["variant"], *[f"{g:.0f}" for g in gs], f"{np.mean(gs):.0f}",
                     f"{r['pooled'][main]['geoscore']:.0f}", f"{ratio:.2f}",
                     f"{100 * min(cov90):.0f}-{100 * max(cov90):.0f}%", f"{r['seconds']:.0f}"])
    base = ok[0]
    rows.append(["(medoid)", *[f"{base['folds'][c]['geoscore'][medoid]:.0f}" for c in cols],
                 f"{np.mean([base['folds'][c]['geoscore'][medoid] for c in cols]):.0f}",
                 f"{base['pooled'][medoid]['geoscore']:.0f}", "1.00", "", ""])
    print_table(["variant", *cols, "mean", "pooled", "worst/medoid", "cov90", "s"], rows,
                title="GeoScore of the main estimate per held-out collection (single photos)")
    for r in results:
        if "skipped" in r:
            print(f"skipped {r['variant']}: {r['skipped']}")
    print()
    rows = []
    for method in base["pooled"]:
        rows.append([method, *[f"{base['folds'][c]['geoscore'][method]:.0f}" for c in cols],
                     f"{base['pooled'][method]['geoscore']:.0f}",
                     "[{:.0f}, {:.0f}]".format(*base["pooled"][method]["ci"])])
    print_table(["estimate / baseline", *cols, "pooled", "95% CI"], rows,
                title=f"Every estimate and baseline, variant {base['variant']!r}")


if __name__ == "__main__":
    main()
