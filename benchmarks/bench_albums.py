"""Albums (PlaNet): single-photo answers vs probability averaging vs embedding averaging vs the album model,
on synthetic trips built from held-out photos, cross-collection and in-collection.

Data: the five Street View collections, embedded as in ``bench_methods.py``
(``--emb FILE.npz``, or geospot's cached embedding pipeline). Per fold: a base head (S2 cells, min 8 / max 60
places, ``TrainConfig()`` defaults) on the training side; the album model on
synthetic trips over the training places, fed out-of-fold base probabilities
(3 folds by place); then trips over the *test* places (random walks of 1-6
places within 300 km, 1-3 views each, simulated capture times, 25% of trips
without times; at least 2 photos; one trip started per test place) answered
per photo by every method and scored against each photo's own position.
No calibration (the same raw probabilities for every method); the local
top-k mean estimate. 95% intervals: bootstrap over trips.

Protocols: ``cross`` = leave one collection out; ``in`` = group K-fold by place over all collections.

    python benchmarks/bench_albums.py --protocols in --folds 3 --save runs/albums
    python benchmarks/bench_albums.py --load runs/albums
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table  # noqa: E402

CELLS = {"min_per_cell": 8, "max_per_cell": 60}


def folds_for(d: dict, protocol: str, k: int, seed: int):
    from geospot.data.splits import group_kfold

    if protocol == "cross":
        return [(c, np.flatnonzero(d["collection"] != c), np.flatnonzero(d["collection"] == c))
                for c in sorted(set(d["collection"].tolist()))]
    return [(f"fold {i + 1}", tr, te) for i, (tr, te) in enumerate(group_kfold(d["location_id"], k, seed))]


def run(d: dict, protocol: str, name: str, tr, te, args) -> dict:
    from geospot.train.album import AlbumConfig
    from geospot.train.config import TrainConfig
    from geospot.workflows.albums import run_fold

    t0 = time.time()
    print(f"{protocol} {name}: train {len(tr)} photos, test {len(te)}", file=sys.stderr)
    r = run_fold(d["emb"][tr], d["lat"][tr], d["lon"][tr], d["location_id"][tr],
                 d["emb"][te], d["lat"][te], d["lon"][te], d["location_id"][te], cell_params=CELLS,
                 train_config=TrainConfig(seed=args.seed), album_config=AlbumConfig(epochs=args.epochs, seed=args.seed),
                 seed=args.seed, log=lambda m: print(m, file=sys.stderr))
    print(f"  {time.time() - t0:.0f} s, {r['trips']} trips, {len(r['photos'])} photo answers", file=sys.stderr)
    return {"protocol": protocol, "name": name, "trip": r["trip"], **{f"err:{m}": e for m, e in r["errors"].items()}}


def table(folds: list[dict], protocol: str) -> None:
    from geospot.eval.bootstrap import error_metric_cis, paired_geoscore
    from geospot.eval.metrics import error_metrics
    from geospot.workflows.albums import METHODS

    fs = [f for f in folds if f["protocol"] == protocol]
    if not fs:
        return
    # trips are numbered per fold: make the bootstrap groups unique across folds
    trip = np.concatenate([np.char.add(f"{f['name']}:", f["trip"].astype(str)) for f in fs])
    rows = []
    single = np.concatenate([f["err:single photo"] for f in fs])
    for m in METHODS:
        if f"err:{m}" not in fs[0]:
            continue
        e = np.concatenate([f[f"err:{m}"] for f in fs])
        em, ci = error_metrics(e), error_metric_cis(e, trip)
        gain = "" if m == "single photo" else "{:+.0f} [{:+.0f}, {:+.0f}]".format(
            *(lambda p: (p["mean"], *p["ci"]))(paired_geoscore(e, single, trip)))
        rows.append([protocol, m, f"{em['median_km']:.0f} [{ci['median_km'][0]:.0f}, {ci['median_km'][1]:.0f}]",
                     f"{100 * em['acc_25km']:.1f}", f"{100 * em['acc_200km']:.1f}", f"{100 * em['acc_750km']:.1f}",
                     f"{100 * em['acc_2500km']:.1f}",
                     f"{em['geoscore']:.0f} [{ci['geoscore'][0]:.0f}, {ci['geoscore'][1]:.0f}]", gain])
    print_table(["protocol", "method", "median km [95% CI]", "@25km", "@200km", "@750km", "@2500km",
                 "GeoScore [95% CI]", "vs single (paired)"], rows,
                title=f"\n{protocol}: per-photo answers on synthetic trips ({len(trip)} photo answers, "
                      f"{len(set(trip.tolist()))} trips)")
    if "err:album model" in fs[0]:
        from geospot.eval.bootstrap import describe_paired

        model = np.concatenate([f["err:album model"] for f in fs])
        for other in ("average probs", "average embeddings"):
            e = np.concatenate([f[f"err:{other}"] for f in fs])
            print(f"album model {describe_paired(other, paired_geoscore(model, e, trip))} (paired, over trips)")
    if protocol == "cross":
        per = [[f["name"], len(set(f["trip"].tolist()))] + [f"{error_metrics(f[f'err:{m}'])['geoscore']:.0f}"
                                                            for m in METHODS if f"err:{m}" in f] for f in fs]
        print_table(["held out", "trips"] + [m for m in METHODS if f"err:{m}" in fs[0]], per,
                    title="\nCross-collection GeoScore per held-out collection")


def main() -> None:
    from bench_methods import load_embeddings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--emb", help="NPZ of embeddings (default: computed through geospot's cache)")
    ap.add_argument("--protocols", nargs="+", default=["cross", "in"], choices=["cross", "in"])
    ap.add_argument("--folds", type=int, default=5, help="in-collection: K of group K-fold")
    ap.add_argument("--epochs", type=int, default=10, help="album model epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="+", help="run only these folds (cross: collection names; in: 1-based numbers)")
    ap.add_argument("--save", metavar="DIR", help="write each fold's errors to DIR/<protocol>-<fold>.npz")
    ap.add_argument("--load", metavar="DIR", help="summarise the folds saved in DIR instead of computing them")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.load:
        folds = []
        for p in sorted(Path(args.load).glob("*.npz")):
            z = np.load(p, allow_pickle=False)
            folds.append({k: (z[k] if z[k].ndim else str(z[k])) for k in z.files})
    else:
        import torch

        torch.set_num_threads(1)
        d = load_embeddings(args.emb, args.encoder)
        d["location_id"] = np.asarray(d["location_id"]).astype(str)
        folds = []
        for protocol in args.protocols:
            for i, (name, tr, te) in enumerate(folds_for(d, protocol, args.folds, args.seed)):
                if args.only and name not in args.only and str(i + 1) not in args.only:
                    continue
                f = run(d, protocol, name, tr, te, args)
                folds.append(f)
                if args.save:
                    Path(args.save).mkdir(parents=True, exist_ok=True)
                    np.savez(Path(args.save) / f"{protocol}-{name.replace(' ', '')}.npz", **f)
    for protocol in ("in", "cross"):
        table(folds, protocol)


if __name__ == "__main__":
    main()
