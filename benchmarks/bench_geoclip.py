"""GeoCLIP per-photo cost: the `geoclip` package's `predict` vs geospot's cached-gallery GeoClipModel.

Offline, so the image tower is a tiny random CLIP (the real ViT-L/14 costs the
same in both: one forward per photo, not measured here). What differs is the
gallery: the package pushes its 100K GPS gallery through the location encoder
on every `predict` call (one image per call); geospot encodes it once, caches
it, and scores a batch with one matrix product + top-k.

Needs the `geoclip` package (`pip install --no-deps geoclip==1.3.0`) for its
weights and reference modules. The reference gallery pass is timed on
`--ref-points` points and scaled linearly to 100K (it is a per-point MLP).

    PYTHONPATH=src python benchmarks/bench_geoclip.py [--ref-points 5000] [--batch 32]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))
from _common import print_table  # noqa: E402
from geoclip_reference import module, package_dir  # noqa: E402

from geospot.models.geoclip import weights as gw  # noqa: E402
from geospot.models.geoclip.model import GeoClipModel, _location_encoder  # noqa: E402


def _timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref-points", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        w = gw.load_weights(gw.convert_installed_package(dest=Path(tmp) / gw.WEIGHTS_FILE, package_dir=package_dir()))
    gallery = w["gallery"].numpy().astype(np.float64)
    n = len(gallery)

    reference = module("location_encoder").LocationEncoder(from_pretrained=True).eval()
    sub = w["gallery"][: args.ref_points]
    with torch.no_grad():
        t_ref = _timed(lambda: torch.nn.functional.normalize(reference(sub), dim=1), repeat=2)
    ref_per_call = t_ref * n / args.ref_points

    enc = _location_encoder(w)
    t0 = time.perf_counter()
    model = GeoClipModel(w, gallery=gallery, cache=False, progress=False)  # the once-only gallery pass
    t_once = time.perf_counter() - t0

    emb = np.random.default_rng(0).standard_normal((args.batch, 512)).astype(np.float32)
    t_ours = _timed(lambda: np.argsort(-model.predict_proba(emb), axis=1)[:, :5])
    t_one = _timed(lambda: np.argsort(-model.predict_proba(emb[:1]), axis=1)[:, :5])
    del enc
    from geospot.models.gallery import predictions_from_probs

    probs = model.predict_proba(emb)
    names = [f"photo{i}" for i in range(args.batch)]
    t_est = _timed(lambda: predictions_from_probs(probs, model.cells, names, top_k=5, geocode=False))
    print_table(
        ["step (100K gallery, gallery side only)", "seconds"],
        [
            ["geoclip package predict: gallery pass per call (= per photo)", f"{ref_per_call:.2f}"],
            ["geospot: gallery pass once, then cached", f"{t_once:.2f}"],
            ["geospot: scoring, per photo in a batch of %d" % args.batch, f"{t_ours / args.batch:.4f}"],
            ["geospot: scoring, a single photo", f"{t_one:.4f}"],
            ["geospot: estimates + 50/90% radii, per photo (batch)", f"{t_est / args.batch:.4f}"],
        ],
        title=f"GeoCLIP gallery cost on this machine ({torch.get_num_threads()} torch threads; "
              f"reference timed on {args.ref_points} points, scaled to {n})",
    )


if __name__ == "__main__":
    main()
