"""Embedding throughput on a GPU: `embed_paths` with the torch runtime vs the bare network.

    python benchmarks/bench_embed_gpu.py [--device cuda] [--encoders efficientnet-lite0 efficientnet-lite2] [--n 1024]

On a GPU, `geospot embed` (backend "auto") runs the encoder in torch on the
device while threads decode the photos. This script measures, side by side:

1. **The bare network** on pre-decoded batches already on the device, batch
   sizes 32-512, at geospot's numerics (fp32, no TF32, so GPU embeddings match
   the CPU/ONNX ones and caches and models stay interchangeable): the ceiling
   geospot is held to. For context, the same network at the fastest numerics
   torch offers there (TF32, channels-last, fp16 autocast), which geospot does
   not use because its embeddings would differ from the CPU ones.
2. **`embed_paths`** on the same JPEGs at the best batch size, with
   `auto_workers` decoding threads and with every core decoding, alternated
   with the bare ceiling so that load changes hit both alike.
3. **Decoding alone** on every core: on a GPU the photos, not the network,
   usually set the pace, so this is the second ceiling.

Without a GPU (`--device cpu`) the same steps run on the CPU build of torch: a
check that the script works, not a GPU figure (on CPU, geospot embeds with
ONNX Runtime: benchmarks/bench_embed.py).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch
from _common import print_table, require_shared_data
from bench_embed import load_line

from geospot.encoders import create_encoder
from geospot.encoders.embed import auto_workers, embed_paths, prepare_image
from geospot.encoders.onnx_runtime import usable_cpus
from geospot.encoders.runtime import EncoderRuntime


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def numerics(fast: bool):
    """geospot's numerics (fp32, TF32 off) or the fastest torch offers (TF32 on, fp16 autocast on CUDA)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = fast
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def bare_seconds(model, images: torch.Tensor, batch: int, fast: bool = False) -> float:
    """Seconds to embed every image of `images` (already on the device) in batches of `batch`."""
    device = images.device
    amp = (torch.autocast("cuda", dtype=torch.float16) if fast and device.type == "cuda"
           else contextlib.nullcontext())
    with numerics(fast), amp:
        model(images[:batch])  # cuDNN picks its kernels for this shape
        synchronize(device)
        t0 = time.perf_counter()
        for i in range(0, len(images), batch):
            model(images[i:i + batch])
        synchronize(device)
    return time.perf_counter() - t0


def decode_all(paths: list[str], preprocess, workers: int) -> tuple[np.ndarray, float]:
    """(the preprocessed images [N, 3, S, S], images/s) decoding on `workers` threads."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        images = np.stack(list(pool.map(lambda p: prepare_image(p, preprocess), paths)))
    return images, len(paths) / (time.perf_counter() - t0)


def pipeline_seconds(runtime, paths: list[str], batch: int, workers: int) -> float:
    t0 = time.perf_counter()
    result = embed_paths(paths, runtime, runtime.preprocess, batch_size=batch, workers=workers, progress=False)
    synchronize(runtime.device)
    if not result.ok.all():
        raise SystemExit(f"benchmark images failed to decode: {list(result.errors.values())[:3]}")
    return time.perf_counter() - t0


def bench_encoder(name: str, paths: list[str], device: torch.device, batches: list[int], repeats: int) -> list[list]:
    n, cpus = len(paths), usable_cpus()
    runtime = EncoderRuntime(name, backend="torch", device=str(device))
    host, decode_ips = decode_all(paths, runtime.preprocess, cpus)
    images = torch.from_numpy(host).to(device)
    model = create_encoder(name).to(device).eval()
    rows = []
    sweep = {}
    for batch in batches:
        sweep[batch] = n / min(bare_seconds(model, images, batch) for _ in range(2))
        rows.append([name, f"bare torch, geospot numerics (fp32), b={batch}", f"{sweep[batch]:.1f}", "", "", "sweep"])
    best = max(sweep, key=sweep.get)

    workers = {f"embed_paths b={best} w=auto({auto_workers(runtime)})": auto_workers(runtime),
               f"embed_paths b={best} w={cpus} (every core decodes)": cpus}
    for w in workers.values():
        pipeline_seconds(runtime, paths[: 2 * best], best, w)  # warm-up: threads, cuDNN, allocator
    bare, piped = [], {k: [] for k in workers}
    for _ in range(repeats):  # alternate: bare, a pipeline, bare, the other pipeline, ...
        for label, w in workers.items():
            bare.append(bare_seconds(model, images, best))
            piped[label].append(pipeline_seconds(runtime, paths, best, w))
    bare_ips = n / statistics.median(bare)
    if device.type == "cuda":  # last: converts the network to channels-last in place
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    fast = max(n / bare_seconds(model, images, b, fast=True) for b in batches)
    # the pipeline can go no faster than the slower of the network and decoding on every core
    lower = min(bare_ips, decode_ips)
    rows.append([name, f"BEST bare torch, geospot numerics, b={best} (alternated, {len(bare)} runs)",
                 f"{bare_ips:.1f}", "1.00", f"{bare_ips / lower:.2f}", "ceiling"])
    rows.append([name, f"decode + preprocess only, {cpus} threads", f"{decode_ips:.1f}",
                 f"{decode_ips / bare_ips:.2f}", f"{decode_ips / lower:.2f}", "second ceiling"])
    for label, secs in piped.items():
        ips = n / statistics.median(secs)
        rows.append([name, label, f"{ips:.1f}", f"{ips / bare_ips:.2f}", f"{ips / lower:.2f}", "geospot"])
    rows.append([name, "bare torch, fastest numerics (TF32, channels-last, fp16; not geospot's)"
                 if device.type == "cuda" else "bare torch, fastest numerics (CUDA only: same as fp32 here)",
                 f"{fast:.1f}", f"{fast / bare_ips:.2f}", "", "context"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--encoders", nargs="+", default=["efficientnet-lite0", "efficientnet-lite2"])
    ap.add_argument("--n", type=int, default=1024, help="Street View JPEGs (streetview-global)")
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    root = require_shared_data() / "streetview-global"
    paths = [str(root / p) for p in pd.read_csv(root / "manifest.csv")["path"][: args.n]]
    what = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else "CPU (a check of the script, not a GPU figure)")
    print(f"device {device}: {what}; torch {torch.__version__}; {usable_cpus()} usable cores")
    print(load_line())
    batches = [b for b in args.batches if b <= len(paths)] or [len(paths)]
    for name in args.encoders:
        rows = bench_encoder(name, paths, device, batches, args.repeats)
        print_table(["encoder", "method", "images/s", "ratio to best bare", "to the lower ceiling", "note"], rows,
                    title=f"{len(paths)} Street View JPEGs on {device}")
        print(load_line(), flush=True)


if __name__ == "__main__":
    main()
