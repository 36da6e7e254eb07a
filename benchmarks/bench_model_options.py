"""`geospot train` options end to end on a saved model: what `geospot eval` prints for a model trained
plain, with auxiliary heads (--aux), and with a refiner and the hybrid head (--refine prototypes --hybrid).

The global Street View collection's own train/test split (in-collection), no calibration, the same
library calls as `geospot train` / `geospot eval` (fit -> save_model -> load_model -> evaluate).
Embeddings: ``--emb FILE.npz`` (``emb``, ``path``) when given, else computed through geospot's
embedding cache.

    python benchmarks/bench_model_options.py
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import require_shared_data  # noqa: E402

VARIANTS = {
    "plain": {},
    "--aux country,driving_side,climate (w 0.2)": dict(aux={"country": 0.2, "driving_side": 0.2, "climate": 0.2}),
    "--refine prototypes --hybrid": dict(refine="prototypes", hybrid=True),
}


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--emb", help="NPZ with emb and path arrays (default: computed through geospot's cache)")
    args = ap.parse_args()
    from geospot.cli.methods_cmds import admin_lines
    from geospot.data.manifest import Manifest, read_manifest
    from geospot.eval.table import format_table
    from geospot.workflows.embedding import embed_manifest
    from geospot.workflows.evaluation import evaluate
    from geospot.workflows.training import fit, load_model, save_model

    m = read_manifest(require_shared_data() / "streetview-global" / "manifest.csv")
    if args.emb:
        npz = Path(args.emb)
        d = np.load(npz, allow_pickle=False)
        row = {p: i for i, p in enumerate(d["path"])}
        emb = d["emb"][[row[str(p)] for p in m.paths]].astype(np.float32)
    else:
        emb = np.asarray(embed_manifest(m, args.encoder).embeddings, np.float32)
    df = m.df.reset_index(drop=True)
    parts = {}
    for split in ("train", "test"):
        rows = np.flatnonzero(df["split"].to_numpy() == split)
        parts[split] = (Manifest(df.iloc[rows].reset_index(drop=True)), emb[rows])
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts in VARIANTS.items():
            model = fit(parts["train"][0], encoder=args.encoder, embeddings=parts["train"][1], calibrate=False,
                        progress=False, **opts)
            save_model(model, Path(tmp) / "m")
            report = evaluate(load_model(Path(tmp) / "m"), parts["test"][0], embeddings=parts["test"][1],
                              progress=False)
            print(f"== geospot train {name}: main method {report['main_method']}")
            print(format_table(report))
            for line in admin_lines(report):
                print(line)
            print(flush=True)


if __name__ == "__main__":
    main()
