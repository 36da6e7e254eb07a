"""District (admin-2) answers on real data: how often the cells allow districts, and how often the
hierarchy's district is right, beside country / region accuracy; then every OSV-5M accuracy (country,
region, district, city) of the hierarchy and the point with its 95% bootstrap interval over places.

For each Street View collection, in-collection: `streetview-global` on its own train/test split, the
others on a split of their places (80% train, 20% test, grouped by location, seed 0). A plain linear
head over the default S2 cells, no calibration (as `bench_model_options.py`), through the same library
calls as `geospot train` / `geospot eval` (fit -> save_model -> load_model -> evaluate). Embeddings from
``--emb FILE.npz`` (``emb``, ``path``; e.g. from `bench_recipes.py --export`), else geospot's cache.

    python benchmarks/bench_districts.py
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, require_shared_data  # noqa: E402

COLLECTIONS = ("global", "croatia", "cities", "nigeria")


def _split(df, name: str) -> np.ndarray:
    """[rows] True for test rows."""
    if name == "global":
        return df["split"].to_numpy() == "test"
    groups = df["location_id"].astype(str).to_numpy()
    uniq = np.unique(groups)
    test = np.random.default_rng(0).permutation(uniq)[: max(1, len(uniq) // 5)]
    return np.isin(groups, test)


def _embeddings(m, encoder: str, npz: Path | None) -> np.ndarray:
    from geospot.workflows.embedding import embed_manifest

    if npz is not None and npz.is_file():
        d = np.load(npz, allow_pickle=False)
        row = {p: i for i, p in enumerate(d["path"])}
        if all(str(p) in row for p in m.paths):
            return d["emb"][[row[str(p)] for p in m.paths]].astype(np.float32)
    return np.asarray(embed_manifest(m, encoder, progress=False).embeddings, np.float32)


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--emb", help="NPZ with emb and path arrays (default: embed through geospot's cache)")
    ap.add_argument("--collections", default=",".join(COLLECTIONS))
    args = ap.parse_args()
    from geospot.data.manifest import Manifest, read_manifest
    from geospot.models.hierarchy import model_shares
    from geospot.workflows.evaluation import evaluate
    from geospot.workflows.training import fit, load_model, save_model

    npz = Path(args.emb) if args.emb else None
    rows, ci_rows = [], []
    for name in args.collections.split(","):
        m = read_manifest(require_shared_data() / f"streetview-{name}" / "manifest.csv")
        emb = _embeddings(m, args.encoder, npz)
        df = m.df.reset_index(drop=True)
        test = _split(df, name)
        parts = {k: (Manifest(df[sel].reset_index(drop=True)), emb[sel])
                 for k, sel in (("train", ~test), ("test", test))}
        with tempfile.TemporaryDirectory() as tmp:
            model = fit(parts["train"][0], encoder=args.encoder, embeddings=parts["train"][1], calibrate=False,
                        progress=False)
            save_model(model, Path(tmp) / "m")
            loaded = load_model(Path(tmp) / "m")
            shares = model_shares(Path(tmp) / "m", loaded.cells)
            report = evaluate(loaded, parts["test"][0], embeddings=parts["test"][1], progress=False)
        h, p = report["admin"]["hierarchy"], report["admin"]["point"]
        pct = lambda x: "-" if x != x else f"{100 * x:.1f}"  # noqa: E731 (NaN: none)
        rows.append([name, len(loaded.cells), f"{100 * shares.resolving().mean():.0f}", h["n"], h["n_district"],
                     pct(h["country_acc"]), pct(h["region_acc"]), pct(h["district_acc"]), pct(p["district_acc"]),
                     pct(h["district_listed"]), pct(h["district_acc_listed"])])
        ci = lambda d, k: "-" if d.get(k) != d.get(k) or k not in d else (  # noqa: E731
            f"{100 * d[k]:.1f} [{100 * d[k + '_ci'][0]:.1f}, {100 * d[k + '_ci'][1]:.1f}]")
        ci_rows.append([name, h["n"]] + [ci(d, f"{lv}_acc") for lv in ("country", "region", "district", "city")
                                         for d in (h, p)] + [pct(h.get("city_listed", float("nan")))])
        print(f"{name}: done", file=sys.stderr, flush=True)
    print_table(["collection", "cells", "cells resolving %", "test places", "with district", "country %",
                 "region %", "district % (hierarchy)", "district % (point)", "listed %", "district % where listed"],
                rows, title="District answers, in-collection (plain linear head, S2 cells, no calibration)")
    print()
    print_table(["collection", "test places"] + [f"{lv} % ({who})" for lv in ("country", "region", "district", "city")
                                                 for who in ("hierarchy", "point")] + ["city listed %"],
                ci_rows, title="OSV-5M accuracies with 95% bootstrap intervals over places (same runs)")


if __name__ == "__main__":
    main()
