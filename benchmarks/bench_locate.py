"""Single-photo `locate` latency: in a warm process (Predictor loaded once) and
as a cold CLI process (`geospot locate photo.jpg`), with the bare encoder
forward pass on a pre-decoded tensor as the floor to compare against.

    python benchmarks/bench_locate.py [--model DIR] [--repeats 20]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np
from _common import print_table, require_shared_data

from geospot.predict import Predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", help="model folder (default: bundled)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--cold-repeats", type=int, default=3)
    args = ap.parse_args()
    data = require_shared_data()
    photos = sorted((data / "streetview-sample" / "images").glob("*.jpg"))[: args.repeats]

    t0 = time.perf_counter()
    predictor = Predictor.load(args.model)
    predictor.predict([photos[0]])  # first call: ONNX session warm-up, geocoder index load
    load_s = time.perf_counter() - t0

    warm = []
    for p in photos:
        t = time.perf_counter()
        predictor.predict([p])
        warm.append(time.perf_counter() - t)

    x = predictor.preprocess(__import__("geospot.data.images", fromlist=["open_image"]).open_image(photos[0]))
    x = np.stack([x]).astype(np.float32)
    bare = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        predictor.runtime.embed(x)
        bare.append(time.perf_counter() - t)

    cold = []
    cmd = [sys.executable, "-m", "geospot", "locate", str(photos[0])] + (["--model", args.model] if args.model else [])
    for _ in range(args.cold_repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        cold.append(time.perf_counter() - t)

    ms = lambda v: f"{1000 * statistics.median(v):.0f}"
    print_table(
        ["what", "median ms", "runs"],
        [
            ["bare encoder forward, pre-decoded (floor)", ms(bare), len(bare)],
            ["warm Predictor.predict(1 photo)", ms(warm), len(warm)],
            ["cold CLI process `geospot locate photo.jpg`", ms(cold), len(cold)],
            ["Predictor.load + first predict", f"{1000 * load_s:.0f}", 1],
        ],
        title=f"locate latency, encoder {predictor.model.encoder_name}, backend {type(predictor.runtime).__name__}",
    )


if __name__ == "__main__":
    main()
