"""Fine-tuning throughput (`--unfreeze`) on 1 vs N processes, for `bench_scale.py --finetune-encoder`.

Generated photos are written to tar shards; each process count trains in a fresh
process (`torch.multiprocessing.spawn` for DDP over gloo) with the same global batch,
reading images from the shards; rows/s is `finetune_distributed`'s own figure (epochs
only, start-up excluded).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def _model(encoder: str, df):
    import torch

    from geospot.encoders import create_encoder
    from geospot.geo.cells import build_cells
    from geospot.models.checkpoint import GeoModel
    from geospot.models.head import GeoCellHead

    cells = build_cells(df["lat"].to_numpy(), df["lon"].to_numpy(), scheme="grid", cell_km=1500.0)
    enc = create_encoder(encoder, pretrained=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = GeoCellHead(enc.embed_dim, len(cells), dropout=0.1)
    return GeoModel(encoder, enc.preprocess.to_dict(), head, cells, train_config={"normalize": True})


def _run(root: Path, cfg: dict, ctx=None) -> dict:
    from geospot.data.manifest import read_manifest
    from geospot.train.finetune import FinetuneConfig
    from geospot.train.finetune_dist import finetune_distributed

    df = read_manifest(root / "shards" / "dataset.shards.json").df[["path", "lat", "lon"]]
    world = ctx.world_size if ctx else 1
    out = finetune_distributed(_model(cfg.pop("encoder"), df), df, FinetuneConfig(**cfg), root / f"run{world}",
                               ctx=ctx, progress=False)
    return {"world": world, "rows_per_s": out.metrics["finetune"]["rows_per_s"], "images": len(df)}


def _worker(rank: int, world: int, port: int, root: str, cfg: dict, out: str) -> None:
    from geospot.train import dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    ctx = dist.init(device="cpu")
    res = _run(Path(root), dict(cfg), ctx)
    if rank == 0:
        Path(out).write_text(json.dumps(res))
    dist.shutdown()


def child(root: str, world: int, cfg: dict, threads: int) -> None:
    """One measurement in this (fresh) process; prints its JSON."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if world == 1:
        print(json.dumps(_run(Path(root), cfg)))
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "res.json")
        torch.multiprocessing.spawn(_worker, args=(world, port, root, cfg, out), nprocs=world, join=True)
        print(Path(out).read_text())


def bench(script: str, encoder: str, images: int, procs: list[int], unfreeze: int, batch_size: int, epochs: int,
          threads: int, workdir: str | None) -> list[list]:
    from geospot.data.manifest import read_manifest
    from geospot.data.shards_write import write_shards
    from geospot.testing import make_fixture_dataset

    rows = []
    cfg = {"encoder": encoder, "unfreeze": unfreeze, "epochs": epochs, "batch_size": batch_size, "workers": 2}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        m = read_manifest(make_fixture_dataset(root / "ds", n_locations=max(1, images // 4), views=4, size=96))
        write_shards(m, root / "shards", per_shard=64)
        for world in procs:
            cmd = [sys.executable, script, "--child", str(root), "--world", str(world), "--threads", str(threads),
                   "--finetune-json", json.dumps(cfg)]
            load = os.getloadavg()[0]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            rows.append([encoder, res["images"], unfreeze, batch_size, world, f"{res['rows_per_s']:.1f}",
                         f"{load:.1f}"])
            print("  ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    return rows
