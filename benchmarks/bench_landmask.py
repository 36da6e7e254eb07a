"""Land mask: geospot's tiled copy vs `global_land_mask` -- load time, memory, identical answers.

    python benchmarks/bench_landmask.py [--points 1000000]

Each load is timed in a fresh process (import + first query, after NumPy is imported), with its peak
resident memory (Linux VmHWM, Python and NumPy included); then both answer the same uniform random points on the sphere.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
from bench_embed import load_line
from _common import print_table

PROBE = """
import json, re, sys, time
import numpy  # both need it; its import time (~0.1-0.5 s) is not the mask's
t = time.perf_counter()
if sys.argv[1] == "geospot":
    from geospot.geo.landmask import is_land
else:
    from global_land_mask.globe import is_land
is_land(48.85, 2.35)
s = time.perf_counter() - t
# VmHWM (peak RSS of this address space): ru_maxrss would carry over the parent's peak across fork+exec
hwm = int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"s": s, "rss_mb": hwm / 1024}))
"""


def probe(which: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, which], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(load_line())
    probe("geospot")  # builds the cached copy on the very first run
    runs = {"geospot": [], "global_land_mask": []}
    for _ in range(args.repeats):  # alternated
        for which in runs:
            runs[which].append(probe(which))
    rows = []
    base_s = statistics.median(r["s"] for r in runs["global_land_mask"])
    for which in ("global_land_mask", "geospot"):
        s = statistics.median(r["s"] for r in runs[which])
        rss = statistics.median(r["rss_mb"] for r in runs[which])
        rows.append([which, f"{s:.3f}", f"{rss:.0f}", f"{base_s / s:.1f}x"])

    from global_land_mask import globe

    from geospot.geo.landmask import land_mask

    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, args.points)
    lat, lon = np.degrees(np.arcsin(z)), rng.uniform(-180, 180, args.points)
    t = time.perf_counter()
    ref = globe.is_land(lat, lon)
    t_ref = time.perf_counter() - t
    mask = land_mask()
    t = time.perf_counter()
    ours = mask.is_land(lat, lon)
    t_ours = time.perf_counter() - t
    print_table(["implementation", "load s (new process)", "peak RSS MB", "load speed-up"], rows,
                title=f"land mask load, median of {args.repeats} fresh processes each, alternated")
    print(f"\n{args.points:,} uniform random points: {int((ours != ref).sum())} disagreements; "
          f"query {t_ref:.2f} s (global_land_mask) vs {t_ours:.2f} s (geospot); {ref.mean():.1%} on land")
    print(load_line())


if __name__ == "__main__":
    main()
