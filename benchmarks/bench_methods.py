"""Accuracy of the state-of-the-art options against the plain head, cross-collection and in-collection.

Data: the five Street View collections in ``../shared/data`` (global, croatia,
sample, cities, nigeria), embedded with one encoder. Embeddings come from
``--emb FILE.npz`` (arrays ``emb``, ``lat``, ``lon``, ``collection``,
``location_id``) when given, else they are computed here through geospot's cached
embedding pipeline (the default frame and views).

Protocols (every place is predicted exactly once per protocol):

* ``cross``: leave one collection out (train on four, test on the fifth);
* ``in``: 5-fold group K-fold over all collections pooled (by location).

Training uses every image; a test place's views are fused (mean of the
normalised embeddings), as ``geospot eval --fuse embeddings``.

Rows: the training medoid; the default head (S2 cells, min 8 / max 60
places, haversine smoothing, defaults of ``TrainConfig``) with its local-mean
estimate; the same head on semantic cells; the S2 head refined by PIGEON's
prototypes, by kNN over training images, or by the hybrid head's offset of
its top cell (OSV-5M); kNN alone; and, for PIGEON's auxiliary heads, an MLP
head (``--aux-hidden`` units, S2 cells) trained without and with auxiliary
targets (country, driving side, Köppen climate, and capture month where the
training rows have a date: the ``date`` column of the cities collection) at
loss weight ``--aux-weight`` (a linear head is never changed by auxiliary
heads: nothing shared trains; tests/models/test_aux.py). A second table gives
each auxiliary head's own accuracy against the majority class. Columns: median km,
accuracy within 25/200/750/2500 km, GeoScore with a 95% bootstrap interval
over places, and country accuracy of the point estimate (reverse-geocoded)
and of the hierarchical argmax (``geospot.models.hierarchy``).

    python benchmarks/bench_methods.py --encoder efficientnet-lite0
    python benchmarks/bench_methods.py --rows aux       # only the rows of the auxiliary heads
    python benchmarks/bench_methods.py --rows albums    # only the album table (bench_albums.py alone)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, require_shared_data  # noqa: E402

from geospot.eval.admin import hierarchy_accuracy, point_admin_accuracy  # noqa: E402
from geospot.eval.metrics import geoscore  # noqa: E402
from geospot.geo.distance import geographic_medoid, haversine_km  # noqa: E402
from geospot.models.fusion import fuse_embeddings, group_index  # noqa: E402

COLLECTIONS = ["global", "croatia", "sample", "cities", "nigeria"]
header = ["protocol", "method", "median km [95% CI]", "@25km", "@200km", "@750km", "@2500km",
          "GeoScore [95% CI]", "country % (point)", "country / region % (hierarchy)"]
AUX_TARGETS = ("country", "driving_side", "climate", "month")
CELLS = {"s2": {"scheme": "s2", "min_per_cell": 8, "max_per_cell": 60},
         "semantic": {"scheme": "semantic", "min_per_cell": 8, "max_per_cell": 60}}


def load_embeddings(path: str | None, encoder: str) -> dict:
    candidate = Path(path) if path else None
    if candidate is not None:
        d = np.load(candidate, allow_pickle=False)
        ok = d["ok"] if "ok" in d.files else np.ones(len(d["lat"]), bool)
        out = {k: d[k][ok] for k in ("emb", "lat", "lon", "collection", "location_id")}
        out["date"] = _dates(d["path"][ok]) if "path" in d.files else np.full(int(ok.sum()), "")
        print(f"embeddings: {candidate} ({ok.sum()} images)", file=sys.stderr)
        return out
    from geospot.data.manifest import read_manifest
    from geospot.pipeline import embed_manifest

    data = require_shared_data()
    parts = {k: [] for k in ("emb", "lat", "lon", "collection", "location_id")}
    for c in COLLECTIONS:
        m = read_manifest(data / f"streetview-{c}" / "manifest.csv")
        r = embed_manifest(m, encoder, progress=True)
        ok = np.asarray(r.ok)
        parts["emb"].append(np.asarray(r.embeddings, np.float32)[ok])
        parts["lat"].append(np.asarray(m.lat)[ok])
        parts["lon"].append(np.asarray(m.lon)[ok])
        parts["collection"].append(np.array([c] * int(ok.sum())))
        parts["location_id"].append(np.array([f"{c}/{g}" for g in np.asarray(m.groups)[ok]]))
        parts.setdefault("date", []).append(_dates(np.asarray(m.paths)[ok]))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _dates(paths) -> np.ndarray:
    """Capture date per image path from the shared manifests that have a ``date`` column (else "")."""
    import pandas as pd

    data = require_shared_data()
    known = {}
    for c in COLLECTIONS:
        path = data / f"streetview-{c}" / "manifest.csv"
        df = pd.read_csv(path, dtype=str)
        if "date" in df.columns:
            known.update(zip((str(path.parent / p) for p in df["path"]), df["date"].fillna("")))
    return np.array([known.get(str(p), "") for p in paths], dtype=object).astype(str)


def _places(d: dict, rows: np.ndarray):
    """Fused test places: normalised-mean embeddings, coordinates, collection."""
    inverse, n = group_index(d["location_id"][rows])
    x = d["emb"][rows] / np.linalg.norm(d["emb"][rows], axis=1, keepdims=True)
    first = np.zeros(n, np.int64)
    first[inverse[::-1]] = np.arange(len(inverse))[::-1]
    return (fuse_embeddings(x, inverse, n), d["lat"][rows][first], d["lon"][rows][first],
            d["collection"][rows][first], d["date"][rows][first])


def run_fold(d: dict, train: np.ndarray, test: np.ndarray, seed: int, hybrid: bool = True, rows: str = "all",
             aux_hidden: int = 512, aux_weight: float = 0.2) -> dict:
    import torch

    from geospot.models.hybrid import fit_hybrid, hybrid_estimate
    from geospot.models.estimate import point_estimates
    from geospot.models.head import normalize_embeddings
    from geospot.models.hierarchy import cell_shares, hierarchy_argmax
    from geospot.models.refine import Gallery, build_prototypes, knn_locate, knn_refine, refine
    from geospot.pipeline import build_model_cells, location_table
    from geospot.train.fit import TrainConfig, train_head

    emb, lat, lon, groups = d["emb"][train], d["lat"][train], d["lon"][train], d["location_id"][train]
    q, t_lat, t_lon, coll, t_date = _places(d, test)
    out = {"_truth": (t_lat, t_lon, coll)}
    p_lat, p_lon = location_table(lat, lon, groups)
    m_lat, m_lon = geographic_medoid(p_lat, p_lon)
    out["medoid (baseline)"] = (np.full(len(q), m_lat), np.full(len(q), m_lon), None)
    gallery = Gallery(emb, lat, lon)
    for name, params in CELLS.items():
        if rows == "aux" and name != "s2":
            continue
        cells = build_model_cells(lat, lon, groups, params)
        head, _ = train_head(emb, lat, lon, cells, TrainConfig(seed=seed), groups=groups, progress=False)
        with torch.no_grad():
            probs = torch.softmax(head(normalize_embeddings(torch.from_numpy(q))), 1).numpy()
        est = point_estimates(probs, cells.centroid_lat, cells.centroid_lon, top_k=5)
        hier = hierarchy_argmax(probs, cell_shares(cells, p_lat, p_lon))
        label = "head, s2 cells (default)" if name == "s2" else f"head, {name} cells"
        out[label] = (est["local_lat"], est["local_lon"], hier)
        if name == "s2" and rows in ("all", "aux") and aux_hidden:
            _aux_rows(out, d, train, q, t_lat, t_lon, t_date, cells, p_lat, p_lon, seed, aux_hidden, aux_weight)
        if name != "s2" or rows == "aux":
            continue
        protos = build_prototypes(emb, lat, lon, cells, radius_km=25.0, groups=groups)
        r_lat, r_lon, _ = refine(probs, q, protos, est["local_lat"], est["local_lon"])
        out["s2 head + prototypes"] = (r_lat, r_lon, hier)
        k_lat, k_lon, _ = knn_refine(probs, q, gallery, cells, est["local_lat"], est["local_lon"])
        out["s2 head + kNN refine"] = (k_lat, k_lon, hier)
        if hybrid:
            offsets = fit_hybrid(emb, lat, lon, cells, seed=seed)
            h_lat, h_lon = hybrid_estimate(offsets, q, est["top_idx"][:, 0], cells)
            out["s2 head + hybrid offsets (top cell)"] = (h_lat, h_lon, hier)
    if rows == "all":
        k_lat, k_lon = knn_locate(q, gallery)
        out["kNN (no head)"] = (k_lat, k_lon, None)
    return out


def _aux_rows(out, d, train, q, t_lat, t_lon, t_date, cells, p_lat, p_lon, seed, hidden, weight):
    """The MLP head without and with auxiliary heads; ``out["_aux"]``: each head's (predicted, true) classes."""
    import torch

    from geospot.models.aux import build_targets, target_values
    from geospot.models.estimate import point_estimates
    from geospot.models.head import normalize_embeddings
    from geospot.models.hierarchy import cell_shares, hierarchy_argmax
    from geospot.train.fit import TrainConfig, train_head_aux

    emb, lat, lon, groups = d["emb"][train], d["lat"][train], d["lon"][train], d["location_id"][train]
    shares = cell_shares(cells, p_lat, p_lon)
    targets = []
    for name in AUX_TARGETS:
        try:
            targets += build_targets({name: weight}, lat, lon, dates=d["date"][train])
        except ValueError as exc:  # e.g. no dated training rows when the cities are held out
            print(f"aux target {name} skipped in this fold: {exc}", file=sys.stderr)
    cfg = TrainConfig(seed=seed, hidden=hidden)
    for label, aux in ((f"MLP head ({hidden} hidden)", None), (f"MLP head + aux heads (w {weight:g})", targets)):
        head, heads, _ = train_head_aux(emb, lat, lon, cells, cfg, aux=aux, groups=groups, progress=False)
        with torch.no_grad():
            feats = head.features(normalize_embeddings(torch.from_numpy(q)))
            probs = torch.softmax(head.out(feats), 1).numpy()
        est = point_estimates(probs, cells.centroid_lat, cells.centroid_lon, top_k=5)
        out[label] = (est["local_lat"], est["local_lon"], hierarchy_argmax(probs, shares))
        if heads is not None:
            pred = heads.predict(feats.numpy())
            out["_aux"] = {}
            for t in targets:
                truth = target_values(t.name, t_lat, t_lon, dates=t_date)
                majority = max(t.classes, key=lambda c: int((t.labels == t.classes.index(c)).sum()))
                out["_aux"][t.name] = (np.asarray(t.classes)[pred[t.name].argmax(1)], truth,
                                       np.full(len(truth), majority))


def bootstrap_ci(values: np.ndarray, stat, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    stats = [stat(values[rng.integers(0, len(values), len(values))]) for _ in range(n)]
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def summarise(folds: list[dict], protocol: str) -> list[list]:
    t_lat = np.concatenate([f["_truth"][0] for f in folds])
    t_lon = np.concatenate([f["_truth"][1] for f in folds])
    rows = []
    for method in [m for m in folds[0] if not m.startswith("_")]:
        lat = np.concatenate([f[method][0] for f in folds])
        lon = np.concatenate([f[method][1] for f in folds])
        d = haversine_km(lat, lon, t_lat, t_lon)
        gs = geoscore(d)
        lo, hi = bootstrap_ci(gs, np.mean)
        m_lo, m_hi = bootstrap_ci(d, np.median)
        country = point_admin_accuracy(lat, lon, t_lat, t_lon)["country_acc"]
        hier = "-"
        if folds[0][method][2] is not None:
            c = np.concatenate([f[method][2][0] for f in folds])
            r = np.concatenate([f[method][2][1] for f in folds])
            h = hierarchy_accuracy(c, r, t_lat, t_lon)
            hier = f"{100 * h['country_acc']:.1f} / {100 * h['region_acc']:.1f}"
        rows.append([protocol, method, f"{np.median(d):.0f} [{m_lo:.0f}, {m_hi:.0f}]",
                     *[f"{100 * (d <= t).mean():.1f}" for t in (25, 200, 750, 2500)],
                     f"{gs.mean():.0f} [{lo:.0f}, {hi:.0f}]", f"{100 * country:.1f}", hier])
    return rows


def aux_table(folds: list[dict], protocol: str) -> list[list]:
    rows = []
    names = sorted({n for f in folds for n in f.get("_aux", {})})
    for name in names:
        parts = [f["_aux"][name] for f in folds if name in f.get("_aux", {})]
        pred, truth, majority = (np.concatenate([p[i] for p in parts]) for i in range(3))
        known = truth != ""
        hit = (pred[known] == truth[known]).astype(float)
        if not hit.size:
            continue
        lo, hi = bootstrap_ci(hit, np.mean)
        rows.append([protocol, name, f"{known.sum()} (in {len(parts)} folds)",
                     f"{100 * hit.mean():.1f} [{100 * lo:.1f}, {100 * hi:.1f}]",
                     f"{100 * (majority[known] == truth[known]).mean():.1f}"])
    return rows


def per_collection(folds: list[dict], methods: list[str]) -> list[list]:
    rows = []
    for f in folds:
        t_lat, t_lon, coll = f["_truth"]
        rows.append([coll[0], len(t_lat)] + [f"{geoscore(haversine_km(f[m][0], f[m][1], t_lat, t_lon)).mean():.0f}"
                                             for m in methods])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--emb", help="NPZ of exported embeddings (default: computed through geospot's cache)")
    ap.add_argument("--protocols", nargs="+", default=["cross", "in"], choices=["cross", "in"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-hybrid", action="store_true", help="skip the hybrid head (OSV-5M offsets)")
    ap.add_argument("--rows", choices=["all", "aux", "albums"], default="all",
                    help="aux: only the medoid, the default head and the auxiliary-head rows; albums: only the "
                         "album table")
    ap.add_argument("--album-epochs", type=int, default=10, help="album model epochs of the album table")
    ap.add_argument("--aux-hidden", type=int, default=512, help="hidden units of the MLP head of the aux rows "
                    "(0: no aux rows)")
    ap.add_argument("--aux-weight", type=float, default=0.2, help="loss weight of every auxiliary head")
    ap.add_argument("--only", type=int, nargs="+", help="run only these folds (1-based; cross: collections in "
                    f"the order {', '.join(COLLECTIONS)}), e.g. one process per fold on a multi-core machine")
    ap.add_argument("--save", metavar="DIR", help="write each fold's predictions to DIR/<protocol>-<k>.npz")
    ap.add_argument("--load", metavar="DIR", help="summarise the folds saved in DIR instead of computing them")
    args = ap.parse_args()
    from geospot.data.splits import group_kfold

    if args.load:
        return summarise_saved(Path(args.load), args.protocols, args.encoder)
    d = load_embeddings(args.emb, args.encoder)
    for protocol in args.protocols if args.rows != "albums" else ():
        t0 = time.perf_counter()
        if protocol == "cross":
            splits = [(np.flatnonzero(d["collection"] != c), np.flatnonzero(d["collection"] == c))
                      for c in COLLECTIONS if (d["collection"] == c).any()]
        else:
            splits = group_kfold(d["location_id"], n_splits=args.folds, seed=args.seed)
        folds = []
        for k, (train, test) in enumerate(splits):
            if args.only and k + 1 not in args.only:
                continue
            folds.append(run_fold(d, np.asarray(train), np.asarray(test), args.seed, not args.no_hybrid, args.rows,
                                  args.aux_hidden, args.aux_weight))
            if args.save:
                save_fold(folds[-1], Path(args.save) / f"{protocol}-{k + 1}.npz")
            print(f"{protocol} fold {k + 1}/{len(splits)} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        if args.only:
            continue
        report(folds, protocol, args.encoder)
    if args.rows in ("all", "albums") and not args.only:
        album_table(d, args)


def album_table(d: dict, args) -> None:
    """Albums (PlaNet) are scored per photo of synthetic trips, against single photos and averaging, so they
    get their own table, from the same embeddings and protocols (`bench_albums.py` runs it alone)."""
    from bench_albums import folds_for, run, table

    opts = argparse.Namespace(seed=args.seed, epochs=args.album_epochs)
    d = dict(d, location_id=np.asarray(d["location_id"]).astype(str))
    for protocol in args.protocols:
        folds = [run(d, protocol, name, tr, te, opts) for name, tr, te in folds_for(d, protocol, args.folds, args.seed)]
        table(folds, protocol)


def save_fold(fold: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"_truth.lat": fold["_truth"][0], "_truth.lon": fold["_truth"][1], "_truth.coll": fold["_truth"][2]}
    for name, (pred, truth, majority) in fold.get("_aux", {}).items():
        arrays[f"_aux.{name}.pred"], arrays[f"_aux.{name}.true"] = pred.astype(str), truth.astype(str)
        arrays[f"_aux.{name}.majority"] = majority.astype(str)
    for i, (method, (lat, lon, hier)) in enumerate((m, v) for m, v in fold.items() if not m.startswith("_")):
        arrays[f"{i}.lat"], arrays[f"{i}.lon"] = lat, lon
        arrays[f"{i}.name"] = np.array(method)
        if hier is not None:
            arrays[f"{i}.country"] = np.asarray(hier[0]).astype(str)
            arrays[f"{i}.region"] = np.asarray(hier[1]).astype(str)
    np.savez(path, **arrays)


def load_fold(path: Path) -> dict:
    z = np.load(path, allow_pickle=False)
    fold = {"_truth": (z["_truth.lat"], z["_truth.lon"], z["_truth.coll"])}
    names = sorted({f.split(".")[1] for f in z.files if f.startswith("_aux.")})
    if names:
        fold["_aux"] = {n: (z[f"_aux.{n}.pred"], z[f"_aux.{n}.true"], z[f"_aux.{n}.majority"]) for n in names}
    i = 0
    while f"{i}.lat" in z.files:
        hier = (z[f"{i}.country"].astype(object), z[f"{i}.region"].astype(object)) if f"{i}.country" in z.files \
            else None
        fold[str(z[f"{i}.name"])] = (z[f"{i}.lat"], z[f"{i}.lon"], hier)
        i += 1
    return fold


def summarise_saved(directory: Path, protocols, encoder: str) -> None:
    for protocol in protocols:
        files = sorted(directory.glob(f"{protocol}-*.npz"), key=lambda p: int(p.stem.split("-")[1]))
        if files:
            print(f"{protocol}: {len(files)} folds from {directory}", file=sys.stderr)
            report([load_fold(f) for f in files], protocol, encoder)


def report(folds: list[dict], protocol: str, encoder: str) -> None:
    # Each protocol's table as soon as it is done (a full run takes a while on a shared CPU).
    print_table(header, summarise(folds, protocol),
                title=f"{protocol}: methods vs the plain head ({encoder}; CIs by bootstrap over places)")
    paired = [m for m in folds[0] if m.startswith("MLP head + aux")]
    if paired and any(m.startswith("MLP head (") for m in folds[0]):
        from geospot.eval.bootstrap import describe_paired, paired_geoscore

        base = next(m for m in folds[0] if m.startswith("MLP head ("))
        t_lat = np.concatenate([f["_truth"][0] for f in folds])
        t_lon = np.concatenate([f["_truth"][1] for f in folds])
        err = {m: haversine_km(np.concatenate([f[m][0] for f in folds]), np.concatenate([f[m][1] for f in folds]),
                               t_lat, t_lon) for m in (base, paired[0])}
        print(f"{protocol}: {paired[0]} " + describe_paired(base, paired_geoscore(err[paired[0]], err[base]))
              + " (paired bootstrap over places)")
    aux = aux_table(folds, protocol)
    if aux:
        print()
        print_table(["protocol", "aux head", "test places with a label", "accuracy % [95% CI]",
                     "majority class %"], aux, title="Auxiliary heads' own accuracy (argmax vs the truth's label)")
    if protocol == "cross":
        methods = [m for m in folds[0] if not m.startswith("_")]
        print()
        print_table(["held out", "places"] + methods, per_collection(folds, methods),
                    title="Cross-collection GeoScore per held-out collection")
    print(flush=True)

if __name__ == "__main__":
    main()
