"""int8 vs fp32 encoder: speed, embedding fidelity and the bundled model's top-cell agreement.

    python benchmarks/bench_int8.py [--encoder efficientnet-lite0] [--per-collection 200] [--calibration 128]

Calibrates the int8 export (static QDQ) on `--calibration` streetview-global
photos that are NOT among the evaluated ones, then, on `--per-collection`
random photos of each Street View collection: cosine similarity of int8 vs
fp32 embeddings and agreement of the bundled default model's top cell.
Speed: bare sessions of both, same threads, batch 16, alternated.
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
    args = ap.parse_args()
    data = require_shared_data()
    print(load_line())
    evaluated = {c: sample(data / c, args.per_collection, seed=1) for c in COLLECTIONS if (data / c).is_dir()}
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


if __name__ == "__main__":
    main()
