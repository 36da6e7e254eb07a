"""Embedding throughput: the full `embed_paths` pipeline vs bare ONNX Runtime forward passes.

    python benchmarks/bench_embed.py [--n 256] [--encoder efficientnet-lite0] [--configs 32x1 32x2 16x2]

Baseline: `EncoderRuntime.embed` (ONNX Runtime) on tensors decoded beforehand, in
the same process -- the ceiling for the pipeline. `embed_paths` adds JPEG
decoding, resizing and normalising in worker threads overlapped with inference;
the goal is >= 0.85 of the baseline. Eager torch on the CPU is shown for context.
Measurements alternate baseline / pipeline runs and report medians, because
the machine may be shared.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
from _common import print_table, require_shared_data

from geospot.encoders.embed import auto_workers, embed_paths, prepare_image
from geospot.encoders.runtime import EncoderRuntime, usable_cpus


def bare_forward(runtime: EncoderRuntime, tensors: np.ndarray, batch_size: int) -> float:
    """Seconds for forward passes over all pre-decoded tensors."""
    t0 = time.perf_counter()
    for i in range(0, len(tensors), batch_size):
        runtime.embed(tensors[i : i + batch_size])
    return time.perf_counter() - t0


def pipeline(runtime: EncoderRuntime, paths: list, batch_size: int, workers: int | None) -> float:
    """Seconds for `embed_paths` (decode + preprocess + inference), no cache."""
    t0 = time.perf_counter()
    result = embed_paths(paths, runtime, runtime.preprocess, batch_size=batch_size, workers=workers, progress=False)
    seconds = time.perf_counter() - t0
    if not result.ok.all():
        raise SystemExit(f"benchmark images failed to decode: {list(result.errors.values())[:3]}")
    return seconds


def _spinning_session(runtime: EncoderRuntime):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = usable_cpus()
    return ort.InferenceSession(str(runtime.onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="number of images (streetview-global)")
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--configs", nargs="+", default=["32xauto", "32x1", "32x2", "16x2"],
                    help="BATCHxWORKERS for embed_paths (WORKERS 'auto' = the default heuristic)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch-images", type=int, default=32, help="images for the (slow) eager torch run")
    args = ap.parse_args()

    root = require_shared_data() / "streetview-global"
    paths = [root / p for p in pd.read_csv(root / "manifest.csv")["path"][: args.n]]
    onnx = EncoderRuntime(args.encoder, backend="onnx", device="cpu")

    t0 = time.perf_counter()
    tensors = np.stack([prepare_image(p, onnx.preprocess) for p in paths])
    decode_s = time.perf_counter() - t0
    onnx.embed(tensors[:8])  # warm-up: ORT allocates its arenas on the first run

    rows = []
    n = len(paths)
    for config in args.configs:
        b_text, w_text = config.lower().split("x")
        batch_size, workers = int(b_text), (None if w_text == "auto" else int(w_text))
        bare, piped = [], []
        for _ in range(args.repeats):  # alternate so load changes hit both alike
            bare.append(bare_forward(onnx, tensors, batch_size))
            piped.append(pipeline(onnx, paths, batch_size, workers))
        b, p = statistics.median(bare), statistics.median(piped)
        label = f"auto={auto_workers(onnx)}" if workers is None else str(workers)
        rows.append([f"embed_paths b={batch_size} w={label}", f"{n / p:.1f}", f"{n / b:.1f}", f"{b / p:.2f}"])

    # Context: ORT's default busy-waiting threads make bare passes faster but steal the
    # cores decoding needs; the runtime turns spinning off (same pipeline throughput).
    spinning = _spinning_session(onnx)
    spinning.run(None, {"images": tensors[:8]})
    t0 = time.perf_counter()
    for i in range(0, n, 32):
        spinning.run(None, {"images": tensors[i : i + 32]})
    rows.append(["bare ORT with spinning threads b=32", "", f"{n / (time.perf_counter() - t0):.1f}", ""])

    eager = EncoderRuntime(args.encoder, backend="torch", device="cpu")
    k = min(args.torch_images, n)
    eager.embed(tensors[:2])
    t0 = time.perf_counter()
    for i in range(0, k, 16):
        eager.embed(tensors[i : min(i + 16, k)])
    torch_ips = k / (time.perf_counter() - t0)
    rows.append(["eager torch (pre-decoded) b=16", f"{torch_ips:.1f}", "", ""])
    rows.append(["decode+preprocess only, 1 thread", f"{n / decode_s:.1f}", "", ""])

    print_table(
        ["method", "images/s", "bare ORT images/s", "ratio (goal >= 0.85)"],
        rows,
        title=f"{args.encoder}, {n} Street View JPEGs, {usable_cpus()} usable CPU cores (ORT intra-op threads)",
    )


if __name__ == "__main__":
    main()
