"""Memory and throughput of streamed head training (memory-mapped float16 embeddings).

    python benchmarks/bench_scale.py [--rows 100000 1000000] [--dim 1280] [--procs 1 2]
                                     [--epochs 1] [--batch-size 1024] [--workdir DIR]

For each size it writes synthetic embeddings to an `.npy` file chunk by chunk
(never whole in memory), then trains one epoch of a linear head with the
haversine loss in a fresh process and reports:

- rows/s of training;
- peak anonymous memory (RssAnon: what the process itself holds; this is what
  must fit in RAM) and peak file-backed resident memory (RssFile: pages of the
  memory-mapped embeddings, reclaimable page cache the kernel drops under
  pressure), sampled every 50 ms, plus the kernel's VmHWM (peak RSS, both kinds).

With `--procs 1 2` the smallest size is also trained with 2 processes
(DistributedDataParallel over gloo on this CPU, `torch.multiprocessing.spawn`,
the same global batch) to give rows/s for 1 vs 2 processes.

`--finetune-encoder tiny|efficientnet-lite0` measures `--unfreeze` fine-tuning
instead: generated photos in tar shards, one epoch on 1 and 2 processes (DDP, gloo),
same global batch (`_finetune_bench.py`).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _common import print_table


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


class PeakMemory:
    """Max of RssAnon and RssFile, sampled in a thread."""

    def __init__(self, every_s: float = 0.05) -> None:
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            s = _status()
            for k in self.peak:
                self.peak[k] = max(self.peak[k], s.get(k, 0))
            time.sleep(every_s)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        s = _status()
        for k in self.peak:
            self.peak[k] = max(self.peak[k], s.get(k, 0))
        self.peak["VmHWM"] = s.get("VmHWM", 0)


def make_data(root: Path, n: int, dim: int, seed: int = 0) -> None:
    """emb.npy (float16, written in chunks), coords.npy, cells/ (S2 cells of a subsample)."""
    from geospot.geo.cells import build_cells

    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lon = rng.uniform(-180, 180, n)
    np.save(root / "coords.npy", np.c_[lat, lon])
    emb = np.lib.format.open_memmap(root / "emb.npy", mode="w+", dtype=np.float16, shape=(n, dim))
    for a in range(0, n, 65536):
        b = min(n, a + 65536)
        emb[a:b] = rng.standard_normal((b - a, dim), dtype=np.float32)
    emb.flush()
    del emb
    sub = rng.choice(n, min(n, 50_000), replace=False)
    build_cells(lat[sub], lon[sub], scheme="s2", min_per_cell=20, max_per_cell=200).save(root / "cells")


def _train(root: Path, epochs: int, batch_size: int, ctx=None) -> dict:
    from geospot.geo.cells import CellTable
    from geospot.train.config import TrainConfig
    from geospot.train.stream import train_head_streaming

    with PeakMemory() as mem:
        emb = np.load(root / "emb.npy", mmap_mode="r")
        coords = np.load(root / "coords.npy")
        cells = CellTable.load(root / "cells")
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, dropout=0.0)
        t0 = time.perf_counter()
        _, hist = train_head_streaming(emb, coords[:, 0], coords[:, 1], cells, cfg, ctx=ctx, progress=False)
        seconds = time.perf_counter() - t0
    return {"rows": int(emb.shape[0]), "cells": len(cells), "world": hist["world_size"],
            "rows_per_s": hist["rows_per_s"], "seconds": seconds, **mem.peak}


def _ddp_worker(rank: int, world: int, port: int, root: str, epochs: int, batch_size: int, out: str) -> None:
    from geospot.train import dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    ctx = dist.init(device="cpu")
    res = _train(Path(root), epochs, batch_size, ctx)
    Path(out, f"rank{rank}.json").write_text(json.dumps(res))
    dist.shutdown()


def child(args) -> None:
    root = Path(args.child)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.world == 1:
        print(json.dumps(_train(root, args.epochs, args.batch_size)))
        return
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_ddp_worker, args=(args.world, port, str(root), args.epochs, args.batch_size, out),
                 nprocs=args.world, join=True)
        ranks = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(args.world)]
    res = dict(ranks[0])
    for k in ("RssAnon", "RssFile", "VmHWM"):
        res[k] = max(r[k] for r in ranks)  # per process
    print(json.dumps(res))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (default: torch's choice)")
    p.add_argument("--workdir", help="where the synthetic .npy files go (default: a temporary folder)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    g = p.add_argument_group("fine-tuning (--unfreeze) instead of head training")
    g.add_argument("--finetune-encoder", help="e.g. tiny or efficientnet-lite0")
    g.add_argument("--finetune-images", type=int, default=256)
    g.add_argument("--finetune-unfreeze", type=int, default=2)
    g.add_argument("--finetune-batch-size", type=int, default=32, help="global batch")
    p.add_argument("--finetune-json", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child and args.finetune_json:
        from _finetune_bench import child as ft_child

        return ft_child(args.child, args.world, json.loads(args.finetune_json), args.threads)
    if args.child:
        return child(args)
    if args.finetune_encoder:
        from _finetune_bench import bench

        rows = bench(__file__, args.finetune_encoder, args.finetune_images, args.procs, args.finetune_unfreeze,
                     args.finetune_batch_size, args.epochs, args.threads, args.workdir)
        return print_table(["encoder", "images", "unfreeze", "global batch", "procs", "rows/s", "load avg"], rows,
                           title=f"--unfreeze fine-tuning from tar shards, {args.epochs} epoch(s), DDP over gloo; "
                                 f"{os.cpu_count()} cores; load average before each run")
    gb = 1024 ** 3
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for i, n in enumerate(sorted(args.rows)):
            root = Path(tmp) / f"n{n}"
            root.mkdir()
            t0 = time.perf_counter()
            make_data(root, n, args.dim)
            print(f"# {n} x {args.dim} float16 = {n * args.dim * 2 / gb:.2f} GB on disk "
                  f"(written in {time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
            for world in (args.procs if i == 0 else [1]):
                cmd = [sys.executable, __file__, "--child", str(root), "--world", str(world),
                       "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
                res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                rows.append([f"{n:,}", res["cells"], world, f"{res['rows_per_s']:,.0f}", f"{res['seconds']:.0f}",
                             f"{res['RssAnon'] / gb:.2f}", f"{res['RssFile'] / gb:.2f}", f"{res['VmHWM'] / gb:.2f}",
                             f"{n * args.dim * 2 / gb:.2f}"])
                print("  ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
            for f in root.glob("*.npy"):
                f.unlink()
    print_table(["rows", "cells", "procs", "rows/s", "s", "peak anon GB", "peak file GB", "VmHWM GB",
                 "embeddings GB"], rows,
                title=f"streamed head training, {args.dim}-d float16 memmap, batch {args.batch_size}, "
                      f"{args.epochs} epoch(s), linear head, haversine loss (peaks per process); "
                      f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
