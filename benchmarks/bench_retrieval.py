"""Where a vector index beats exact NumPy search: the crossover for ``geospot.models.refine.Gallery``.

Random unit vectors (search time does not depend on the content for the exact
methods), ``--queries`` queries, top-16, at several gallery sizes. Methods:
exact NumPy (blocked matrix product + argpartition), FAISS ``IndexFlatIP``
(exact, BLAS) and FAISS HNSW (approximate; recall@16 against the exact
answer is printed, and its build time separately). Best of ``--repeat`` runs.

    python benchmarks/bench_retrieval.py --dim 1280 --sizes 1000 10000 50000 200000
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table  # noqa: E402

from geospot.models.refine import Gallery, l2_normalize  # noqa: E402


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000, 200000])
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--hnsw-max", type=int, default=50000, help="skip HNSW (slow to build) above this size")
    args = ap.parse_args()
    try:
        import faiss  # noqa: F401
    except ImportError:
        sys.exit("needs faiss-cpu: pip install 'geospot[retrieval]'")
    rng = np.random.default_rng(0)
    q = l2_normalize(rng.normal(size=(args.queries, args.dim)))
    rows = []
    for n in args.sizes:
        emb = l2_normalize(rng.normal(size=(n, args.dim)))
        lat = np.zeros(n)
        g_np = Gallery(emb, lat, lat, backend="numpy")
        g_flat = Gallery(emb, lat, lat, backend="faiss")
        g_flat.search(q[:1], args.k)  # builds the index
        t_np = _best(lambda: g_np.search(q, args.k), args.repeat)
        t_flat = _best(lambda: g_flat.search(q, args.k), args.repeat)
        per_q = 1000.0 / args.queries
        hnsw = ["-", "-", "-"]
        if n <= args.hnsw_max:
            g_hnsw = Gallery(emb, lat, lat, backend="faiss", hnsw=True)
            t_build = time.perf_counter()
            g_hnsw.search(q[:1], args.k)
            t_build = time.perf_counter() - t_build
            t_hnsw = _best(lambda: g_hnsw.search(q, args.k), args.repeat)
            exact = g_np.search(q, args.k)[1]
            approx = g_hnsw.search(q, args.k)[1]
            recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(exact, approx)])
            hnsw = [f"{t_hnsw * per_q:.3f}", f"{recall:.3f}", f"{t_build:.1f}"]
        rows.append([f"{n:,}", f"{t_np * per_q:.2f}", f"{t_flat * per_q:.2f}", *hnsw])
        print(f"done {n}", file=sys.stderr)
    print_table(["gallery", "numpy ms/query", "faiss flat ms/query", "faiss hnsw ms/query", "hnsw recall@k",
                 "hnsw build s"], rows,
                title=f"Top-{args.k} cosine search, dim {args.dim}, {args.queries} queries per batch")


if __name__ == "__main__":
    main()
