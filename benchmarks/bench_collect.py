"""Throughput and memory of the street-level imagery collector.

Throughput: the Street View collector against the local fake API (the test
server, run in a separate process so that it does not share the client's
GIL) serving realistic 640x640 JPEGs (~40-60 kB), for concurrency 1/4/8,
without and with a simulated network round trip. The baseline is
concurrency 1 measured in the same run.

Memory (``--memory``): peak RSS of the engine for 10k vs 100k locations,
each in a fresh process, with an in-process stub source (no HTTP; tiny
images), to show that memory does not grow with the number of rows.

    python benchmarks/bench_collect.py [--locations 40] [--latency-ms 0,30] [--memory]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE_DIR = ROOT / "tests" / "data" / "sources"

_SERVER = """
import sys, time
sys.path.insert(0, {fake_dir!r})
from fake_api import FakeApi
api = FakeApi(key="bench-key-000", latency_s={latency_s})
api.everywhere_step_deg = 0.0001
with api:
    print(api.streetview_url, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
"""


def _start_server(latency_s: float):
    proc = subprocess.Popen([sys.executable, "-c", _SERVER.format(fake_dir=str(FAKE_DIR), latency_s=latency_s)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def _throughput(base_url: str, concurrency: int, locations: int, out: Path) -> dict:
    from geospot.data.sources.collect import collect
    from geospot.data.sources.http import HttpClient
    from geospot.data.sources.streetview import StreetViewSource

    client = HttpClient(timeout_s=10, max_connections=concurrency)
    source = StreetViewSource(client, "bench-key-000", base_url=base_url, size=(640, 640))
    # Points 0.001 deg apart: each finds its own pano on the server's 0.0001-deg grid.
    per_cell = 10
    points = ((f"c{i // per_cell}", 40.0 + 0.001 * i, 10.0) for i in range(locations))
    t0 = time.perf_counter()
    summary = collect(source, points, out, per_cell=per_cell, concurrency=concurrency, progress=False)
    wall = time.perf_counter() - t0
    assert summary.locations_new == locations, summary.lines()
    return {"loc_s": locations / wall, "req_s": summary.requests / wall,
            "mb_s": client.bytes / wall / 1e6, "wall_s": wall, "requests": summary.requests}


_MEMORY = """
import resource, sys
from geospot.data.sources.collect import Location, View, collect
from geospot.data.sources.http import HttpClient
sys.path.insert(0, {fake_dir!r})
from fake_api import jpeg_bytes

JPEG = jpeg_bytes(16, 16)

class StubSource:
    name = "stub"; views_per_location = 1; requests_per_lookup = 1
    def __init__(self):
        self.client = HttpClient()
    def identity(self):
        return {{}}
    def lookup(self, lat, lon):
        sid = f"{{lat:.6f}}_{{lon:.6f}}"
        return [Location(sid, sid, lat, lon, "2020-01", "stub", [View(sid, 0.0, "stub://" + sid)])]
    def fetch(self, view):
        return JPEG

n = {n}
points = ((f"c{{i // 10}}", -60.0 + 120.0 * (i / n), 0.0) for i in range(n))
s = collect(StubSource(), points, sys.argv[1], per_cell=10, concurrency=4, progress=False)
assert s.locations_new == n, s.lines()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
"""


def _memory(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", _MEMORY.format(fake_dir=str(FAKE_DIR), n=n), tmp],
                             capture_output=True, text=True, check=True)
        return float(res.stdout.strip().splitlines()[-1]), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--locations", type=int, default=40, help="locations per configuration (4 images each)")
    parser.add_argument("--latency-ms", default="0,30", help="simulated server latency per request, ms")
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--memory", action="store_true", help="also measure peak RSS for 10k vs 100k locations")
    args = parser.parse_args()

    print(f"collector throughput: {args.locations} locations x 4 headings of 640x640 JPEG per row, "
          f"fake API in its own process, {os.cpu_count()} CPU cores")
    print(f"{'latency':>8} {'conc':>5} {'loc/s':>8} {'req/s':>8} {'MB/s':>7} {'wall s':>7} {'vs conc 1':>10}")
    results = {}
    for latency_ms in (float(v) for v in args.latency_ms.split(",")):
        proc, url = _start_server(latency_ms / 1000.0)
        try:
            base = None
            for conc in (int(v) for v in args.concurrency.split(",")):
                with tempfile.TemporaryDirectory() as tmp:
                    r = _throughput(url, conc, args.locations, Path(tmp) / "out")
                base = base or r["loc_s"]
                results[(latency_ms, conc)] = r
                print(f"{latency_ms:>6.0f}ms {conc:>5d} {r['loc_s']:>8.1f} {r['req_s']:>8.1f} {r['mb_s']:>7.1f} "
                      f"{r['wall_s']:>7.2f} {r['loc_s'] / base:>9.2f}x")
        finally:
            proc.stdin.close()
            proc.wait(timeout=10)
    if args.memory:
        print("\nengine peak RSS (stub source, no HTTP, 1 tiny image per location, streamed points)")
        print(f"{'locations':>10} {'peak RSS MB':>12} {'wall s':>7}")
        for n in (10_000, 100_000):
            rss, wall = _memory(n)
            print(f"{n:>10d} {rss:>12.1f} {wall:>7.1f}")
    print(json.dumps({f"{k[0]:g}ms/c{k[1]}": round(v["loc_s"], 2) for k, v in results.items()}), file=sys.stderr)


if __name__ == "__main__":
    main()
