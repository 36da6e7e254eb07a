"""The README flow embeds each photo once: `embed` -> `train --split train` -> `eval --split test`.

    python benchmarks/bench_cache_flow.py [--n 240]

Runs the three CLI commands on the first `--n` rows of streetview-global (which
has a `split` column) with a fresh cache and prints each command's
"reused N, embedding M" line and wall time, then the cache's size on disk and
how long looking all photos up takes.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from _common import print_table, require_shared_data
from bench_embed import load_line


def run(args: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "geospot", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"geospot {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    lines = re.findall(r"embed \S+: reused \d+, embedding \d+", proc.stderr)
    return time.perf_counter() - t, "; ".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=240)
    args = ap.parse_args()
    root = require_shared_data() / "streetview-global"
    print(load_line())
    with tempfile.TemporaryDirectory() as tmp:
        full = pd.read_csv(root / "manifest.csv")
        n_test = args.n // 4  # the file is ordered by split: take both
        df = pd.concat([full[full["split"] == "train"].head(args.n - n_test), full[full["split"] == "test"].head(n_test)])
        df["path"] = [str(root / p) for p in df["path"]]
        manifest = Path(tmp) / "manifest.csv"
        df.to_csv(manifest, index=False)
        cache = Path(tmp) / "cache"
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
        common = ["--cache", str(cache)]
        steps = [
            ["embed", str(manifest), *common],
            ["train", str(manifest), "--split", "train", "--out", f"{tmp}/m", "--epochs", "5", "--min-per-cell", "3",
             *common],
            ["eval", f"{tmp}/m", str(manifest), "--split", "test", *common],
        ]
        rows = []
        for step in steps:
            secs, said = run(step, env)
            rows.append([f"geospot {step[0]}" + (f" --split {step[step.index('--split') + 1]}" if "--split" in step else ""), said, f"{secs:.1f}"])
        print_table(["command", "what it said (stderr)", "seconds"], rows,
                    title=f"README flow on {len(df)} photos ({(df['split'] == 'train').sum()} train, "
                          f"{(df['split'] == 'test').sum()} test), fresh cache")
        size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())

        from geospot.encoders.cache import EmbeddingCache, photo_key

        (folder,) = [p for p in cache.iterdir() if p.is_dir()]
        import json

        store = EmbeddingCache(cache, json.loads((folder / "settings.json").read_text()))
        t = time.perf_counter()
        keys = [photo_key(p) for p in df["path"]]
        found, _ = store.lookup(keys)
        print(f"\ncache: {size / 1e6:.2f} MB for {found.sum()} photos; stat + lookup of all: "
              f"{1000 * (time.perf_counter() - t):.0f} ms")
    print(load_line())


if __name__ == "__main__":
    main()
