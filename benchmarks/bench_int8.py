"""int8 vs fp32 encoder: speed, embedding fidelity and the bundled model's top-cell agreement.

    python benchmarks/bench_int8.py [--encoder efficientnet-lite0] [--per-collection 200] [--calibration 128]
    python benchmarks/bench_int8.py --loco [--skip-quantize]

Calibrates the int8 export (static QDQ) on `--calibration` streetview-global
photos that are NOT among the evaluated ones, then, on `--per-collection`
random photos of each Street View collection: cosine similarity of int8 vs
fp32 embeddings and agreement of the bundled default model's top cell.
Speed: bare sessions of both, same threads, batch 16, alternated.

`--loco`: the accuracy change under the cross-collection protocol, as `geospot locate
--precision int8` meets it: leave-one-collection-out over every Street View collection,
each model trained (and calibrated) on full-precision embeddings of the other collections
as `geospot train` trains it, the held-out photos answered once from fp32 and once from
int8 embeddings; per collection and pooled, with paired 95% bootstrap intervals over places.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
from _common import print_table, require_shared_data
from bench_embed import load_line

from geospot.encoders.embed import embed_paths, prepare_image
from geospot.encoders.onnx_runtime import OnnxRuntime
from geospot.encoders.quantize import quantize_encoder
from geospot.models.numpy_model import load_numpy_model

COLLECTIONS = ("streetview-global", "streetview-croatia", "streetview-nigeria", "streetview-cities", "streetview-sample")


def sample(root, n: int, seed: int = 0, exclude=()) -> list[str]:
    paths = [str(root / p) for p in pd.read_csv(root / "manifest.csv")["path"]]
    paths = [p for p in paths if p not in set(exclude)]
    rng = np.random.default_rng(seed)
    return [paths[i] for i in sorted(rng.choice(len(paths), min(n, len(paths)), replace=False))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--per-collection", type=int, default=200)
    ap.add_argument("--calibration", type=int, default=128)
    ap.add_argument("--skip-quantize", action="store_true", help="reuse the int8 export already in the cache")
    ap.add_argument("--loco", action="store_true",
                    help="measure the accuracy change leave-one-collection-out instead (see above)")
    args = ap.parse_args()
    data = require_shared_data()
    print(load_line())
    evaluated = {c: sample(data / c, args.per_collection, seed=1) for c in COLLECTIONS if (data / c).is_dir()}
    if args.loco:
        if not args.skip_quantize:
            # calibrated on photos of one collection; every collection is held out once below
            cal = sample(data / "streetview-global", args.calibration, seed=2)
            quantize_encoder(args.encoder, cal, limit=args.calibration)
        loco(args.encoder)
        print(load_line())
        return
    if not args.skip_quantize:
        cal = sample(data / "streetview-global", args.calibration, seed=2, exclude=evaluated.get("streetview-global", []))
        t = time.perf_counter()
        quantize_encoder(args.encoder, cal, limit=args.calibration)
        print(f"quantised {args.encoder} on {len(cal)} calibration photos in {time.perf_counter() - t:.0f} s")
    fp32, int8 = OnnxRuntime.pretrained(args.encoder), OnnxRuntime.pretrained(args.encoder, "int8")
    model = load_numpy_model(None)
    if model.encoder_name != args.encoder:
        model = None  # the bundled model uses another encoder: fidelity only

    rows = []
    for name, paths in evaluated.items():
        a = embed_paths(paths, fp32, fp32.preprocess, progress=False)
        b = embed_paths(paths, int8, int8.preprocess, progress=False)
        ok = a.ok & b.ok
        ea, eb = a.embeddings[ok], b.embeddings[ok]
        cos = (ea * eb).sum(1) / np.maximum(np.linalg.norm(ea, axis=1) * np.linalg.norm(eb, axis=1), 1e-12)
        agree = top5 = ""
        if model is not None:
            pa, pb = model.predict_proba(ea), model.predict_proba(eb)
            agree = f"{100 * np.mean(pa.argmax(1) == pb.argmax(1)):.1f}"
            top5 = f"{100 * np.mean([t in set(r) for t, r in zip(pa.argmax(1), np.argsort(-pb, 1)[:, :5])]):.1f}"
        rows.append([name, int(ok.sum()), f"{cos.mean():.4f}", f"{np.percentile(cos, 5):.4f}", f"{cos.min():.4f}",
                     agree, top5])
    print_table(["collection", "photos", "cosine mean", "cosine p5", "cosine min", "top cell agrees %",
                 "fp32 top cell in int8 top 5 %"], rows,
                title=f"{args.encoder}: int8 vs fp32 embeddings; bundled default model's predictions")

    x = np.stack([prepare_image(p, fp32.preprocess) for p in evaluated["streetview-global"][:64]])
    times = {"fp32": [], "int8": []}
    for rt in (fp32, int8):
        rt.embed(x[:2])
    for _ in range(3):
        for label, rt in (("fp32", fp32), ("int8", int8)):
            t = time.perf_counter()
            for i in range(0, len(x), 16):
                rt.embed(x[i : i + 16])
            times[label].append(time.perf_counter() - t)
    f, q = statistics.median(times["fp32"]), statistics.median(times["int8"])
    print_table(["precision", "images/s (bare, b=16)", "speed-up"],
                [["fp32", f"{len(x) / f:.1f}", "1.00"], ["int8", f"{len(x) / q:.1f}", f"{f / q:.2f}"]],
                title=f"{args.encoder} speed, alternated, median of 3")
    print(load_line())


def loco(encoder: str) -> None:
    """Leave-one-collection-out: fp32-trained models answering fp32 vs int8 embeddings of the held-out photos."""
    import tempfile

    from _common import collection_data

    from geospot.eval.bootstrap import describe_paired, paired_geoscore
    from geospot.train.config import TrainConfig
    from geospot.workflows.crossval import cross_validate
    from geospot.workflows.scoring import MEDOID
    from geospot.workflows.training import DEFAULT_CELLS

    manifest, fp32 = collection_data(encoder=encoder, progress=False)
    _, int8 = collection_data(encoder=encoder, progress=False, precision="int8")
    tables, reports = {}, {}
    # both runs score the same photos: those both encoders read
    for label, test in (("fp32", int8_ok_as(fp32, int8)), ("int8", int8)):
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            reports[label] = cross_validate(manifest, group_by="collection", encoder=encoder, cell_params=DEFAULT_CELLS,
                                            config=TrainConfig(), fuse="none", embeddings=fp32, test_embeddings=test,
                                            out_dir=out, progress=False)
            tables[label] = pd.read_csv(f"{out}/predictions.csv")
            print(f"{label}: {time.perf_counter() - t:.0f} s", flush=True)
    a, b = tables["fp32"], tables["int8"]
    if not (a["path"].equals(b["path"]) and a["fold"].equals(b["fold"])):
        raise SystemExit("the two runs scored different photos")
    group_of = dict(zip(np.asarray(manifest.paths, dtype=object), np.asarray(manifest.groups)))
    groups = np.array([group_of[p] for p in a["path"]])
    main = reports["fp32"]["main_method"]
    # the constant guess beside them, from the same run (the medoid of each fold's training places)
    medoid = {f["fold"]: f["methods"][MEDOID]["geoscore"] for f in reports["fp32"]["folds"]}
    medoid["pooled"] = reports["fp32"]["pooled"][MEDOID]["geoscore"]
    rows = []
    for fold in list(dict.fromkeys(a["fold"])) + ["pooled"]:
        m = np.ones(len(a), bool) if fold == "pooled" else (a["fold"] == fold).to_numpy()
        ea, eb = a["error_km"].to_numpy()[m], b["error_km"].to_numpy()[m]
        d = paired_geoscore(eb, ea, groups=groups[m])
        cov = [f"{100 * np.mean(t['error_km'].to_numpy()[m] <= t['radius90_km'].to_numpy()[m]):.0f}%" for t in (a, b)]
        rows.append([fold, int(m.sum()), f"{np.mean(5000 * np.exp(-ea / 1492.7)):.0f}",
                     f"{np.mean(5000 * np.exp(-eb / 1492.7)):.0f}", f"{d['mean']:+.0f} [{d['ci'][0]:+.0f}, {d['ci'][1]:+.0f}]",
                     f"{np.median(ea):.0f}", f"{np.median(eb):.0f}", cov[0], cov[1], f"{medoid[fold]:.0f}"])
    print_table(["held out", "photos", "GeoScore fp32", "GeoScore int8", "int8 - fp32 [95% CI]", "median km fp32",
                 "median km int8", "cov90 fp32", "cov90 int8", "medoid"], rows,
                title=f"Leave-one-collection-out, {encoder}: models trained on fp32 embeddings, held-out photos "
                      f"through the fp32 vs the int8 encoder (main estimate {main})")
    d = paired_geoscore(b["error_km"], a["error_km"], groups=groups)
    print("int8 " + describe_paired("fp32", d))


def int8_ok_as(fp32, int8):
    """The fp32 embeddings, usable only where the int8 encoder read the photo too (same photos in both runs)."""
    from types import SimpleNamespace

    return SimpleNamespace(embeddings=fp32.embeddings, ok=np.asarray(fp32.ok) & np.asarray(int8.ok), errors={})


if __name__ == "__main__":
    main()
