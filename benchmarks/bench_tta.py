"""What test-time augmentation costs: `embed_paths` photos/s with each `--tta` view set.

    python benchmarks/bench_tta.py [--encoder efficientnet-lite0] [--n 64] [--repeats 3] [--tta none flip five]

The view sets are timed in alternation (so load changes on a shared machine hit
them alike) on the same Street View JPEGs, no cache; the table gives the median
photos/s, the crops/s through the encoder and the time per photo relative to
the centre crop alone (expected: about V, the crops per photo, since each photo
is decoded and resized once).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import pandas as pd
from _common import print_table, require_shared_data

from geospot.cli.core import TTA_VIEWS
from geospot.encoders.embed import embed_paths
from geospot.encoders.onnx_runtime import OnnxRuntime, usable_cpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--n", type=int, default=64, help="Street View JPEGs (streetview-global)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tta", nargs="+", default=["none", "flip", "five"], choices=list(TTA_VIEWS))
    args = ap.parse_args()
    root = require_shared_data() / "streetview-global"
    paths = [str(root / p) for p in pd.read_csv(root / "manifest.csv")["path"][: args.n]]
    try:
        runtime = OnnxRuntime.pretrained(args.encoder)
    except Exception:  # noqa: BLE001 - first run on this machine: export once (torch)
        from geospot.encoders.runtime import EncoderRuntime

        runtime = EncoderRuntime(args.encoder, backend="onnx", device="cpu")
    pres = {t: runtime.preprocess.with_views(TTA_VIEWS[t]) for t in args.tta}
    embed_paths(paths[:8], runtime, pres[args.tta[0]], progress=False)  # warm-up (arena, page cache)
    secs: dict[str, list[float]] = {t: [] for t in args.tta}
    for _ in range(args.repeats):
        for t, pre in pres.items():
            t0 = time.perf_counter()
            embed_paths(paths, runtime, pre, batch_size=32, workers=None, progress=False)
            secs[t].append(time.perf_counter() - t0)
    base = statistics.median(secs[args.tta[0]])
    rows = []
    for t, pre in pres.items():
        s = statistics.median(secs[t])
        rows.append([t, pre.n_views, f"{len(paths) / s:.1f}", f"{len(paths) * pre.n_views / s:.1f}", f"{s / base:.2f}"])
    one, five, _ = os.getloadavg()
    print_table(["--tta", "crops/photo", "photos/s", "crops/s", f"time vs {args.tta[0]}"], rows,
                title=f"{args.encoder}, {len(paths)} Street View JPEGs, {usable_cpus()} usable cores, "
                      f"load average {one:.1f} / {five:.1f} (shared machine)")


if __name__ == "__main__":
    main()
