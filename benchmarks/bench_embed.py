"""Embedding throughput: `embed_paths` (decode overlapped with inference) vs the BEST bare ONNX Runtime.

    python benchmarks/bench_embed.py [--encoders efficientnet-lite0 efficientnet-lite2] [--n 256]

1. Sweep bare ONNX Runtime on pre-decoded tensors -- intra-op threads x
   spinning on/off x batch size -- and keep the fastest configuration: that is
   the ceiling, not geospot's own session settings.
2. Alternate (so load changes hit both alike) the best bare configuration and
   `embed_paths` on the same JPEGs (decode + preprocess in threads, no cache),
   with the runtime's default session and with the best bare session's
   settings; report medians and the ratio to the best bare forward.
3. Print the machine load before and after: the machine may be shared.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time

import numpy as np
import pandas as pd
from _common import print_table, require_shared_data

from geospot.encoders.embed import auto_workers, embed_paths, prepare_image
from geospot.encoders.onnx_runtime import OnnxRuntime, make_session, read_verified, usable_cpus


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return (f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores "
            "(the machine is shared with other agents; absolute numbers move with their load)")


def bare_seconds(session, tensors: np.ndarray, batch_size: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(tensors), batch_size):
        session.run(None, {"images": tensors[i : i + batch_size]})
    return time.perf_counter() - t0


def sweep(data: bytes, tensors: np.ndarray, batches: list[int]) -> list[tuple[float, dict]]:
    """(images/s, config) of every bare configuration, fastest first."""
    results = []
    threads_options = sorted({1, usable_cpus()})
    for threads, spinning in itertools.product(threads_options, (False, True)):
        session = make_session(data, threads=threads, spinning=spinning)
        session.run(None, {"images": tensors[:2]})  # arena allocation
        for batch in batches:
            secs = min(bare_seconds(session, tensors, batch) for _ in range(2))
            results.append((len(tensors) / secs, {"threads": threads, "spinning": spinning, "batch": batch}))
        del session
    return sorted(results, key=lambda r: -r[0])


def pipeline_seconds(runtime, paths, batch_size: int, workers) -> float:
    t0 = time.perf_counter()
    result = embed_paths(paths, runtime, runtime.preprocess, batch_size=batch_size, workers=workers, progress=False)
    secs = time.perf_counter() - t0
    if not result.ok.all():
        raise SystemExit(f"benchmark images failed to decode: {list(result.errors.values())[:3]}")
    return secs


def bench_encoder(name: str, paths: list, repeats: int, sweep_n: int) -> list[list]:
    default = OnnxRuntime.pretrained(name)
    data, _ = read_verified(default.onnx_path)
    t0 = time.perf_counter()
    tensors = np.stack([prepare_image(p, default.preprocess) for p in paths])
    decode_ips = len(paths) / (time.perf_counter() - t0)

    ranked = sweep(data, tensors[:sweep_n], [1, 8, 32])
    rows = [[name, f"bare ORT threads={c['threads']} spin={'on' if c['spinning'] else 'off'} b={c['batch']}",
             f"{ips:.1f}", "", "sweep"] for ips, c in ranked]
    best_ips, best = ranked[0]
    best_session = make_session(data, threads=best["threads"], spinning=best["spinning"])
    best_session.run(None, {"images": tensors[:2]})
    tuned = OnnxRuntime.pretrained(name, threads=best["threads"], spinning=best["spinning"])
    n, b = len(paths), best["batch"]
    candidates = {
        f"embed_paths default session b=32 w=auto({auto_workers(default)})": (default, 32, None),
        f"embed_paths best-bare session b={b} w=auto": (tuned, b, None),
        f"embed_paths best-bare session b={b} w=2": (tuned, b, 2),
    }
    for runtime, batch, workers in candidates.values():
        pipeline_seconds(runtime, paths[:16], batch, workers)  # warm-up
    bare, piped = [], {k: [] for k in candidates}
    for _ in range(repeats):  # alternate: bare, each pipeline, bare, ...
        for label, (runtime, batch, workers) in candidates.items():
            bare.append(bare_seconds(best_session, tensors, b))
            piped[label].append(pipeline_seconds(runtime, paths, batch, workers))
    bare_ips = n / statistics.median(bare)
    rows.append([name, f"BEST bare ORT (alternated, {len(bare)} runs)", f"{bare_ips:.1f}", "1.00", "ceiling"])
    for label, secs in piped.items():
        ips = n / statistics.median(secs)
        rows.append([name, label, f"{ips:.1f}", f"{ips / bare_ips:.2f}", "goal >= 0.9"])
    rows.append([name, "decode + preprocess only, 1 thread", f"{decode_ips:.1f}", "", "context"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", nargs="+", default=["efficientnet-lite0", "efficientnet-lite2"])
    ap.add_argument("--n", type=int, default=256, help="Street View JPEGs (streetview-global)")
    ap.add_argument("--sweep-n", type=int, default=64, help="pre-decoded images per sweep configuration")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    root = require_shared_data() / "streetview-global"
    paths = [str(root / p) for p in pd.read_csv(root / "manifest.csv")["path"][: args.n]]
    print(load_line())
    for name in args.encoders:
        try:
            OnnxRuntime.pretrained(name)
        except Exception:  # noqa: BLE001 - first run on this machine: export once (torch)
            from geospot.encoders.runtime import EncoderRuntime

            EncoderRuntime(name, backend="onnx", device="cpu")
        rows = bench_encoder(name, paths, args.repeats, args.sweep_n)
        print_table(["encoder", "method", "images/s", "ratio to best bare", "note"], rows,
                    title=f"{len(paths)} Street View JPEGs, {usable_cpus()} usable cores")
        print(load_line(), flush=True)


if __name__ == "__main__":
    main()
