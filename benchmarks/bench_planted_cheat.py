"""Plant a watermark shortcut in real Street View images and catch it.

The original article's lesson: a geolocation model that scores too well may be
reading the photographer's name instead of the landscape. This benchmark plants
that cheat on purpose and shows each step on real data:

1. sample locations of ../shared/data/streetview-global (train from the
   author's train split, test from the test split) and stamp a fake uploader
   name in the bottom-right corner, the name tied to the region
   (`geospot.explain.planted.uploader_for`, 30-degree regions by default);
2. train a model on the stamped training images: frozen embeddings of the default
   encoder + geocell head (`geospot.pipeline.fit`), then end-to-end
   fine-tuning of the last ``--unfreeze`` blocks (`geospot.train.finetune`).
   A *frozen* Lite0's pooled final features barely see a small corner stamp; the
   default encoder's pooled mid-level features see it (docs/explain.md has both
   runs); a fine-tuned encoder learns to read it;
3. score the models on stamped and on clean test images: the gap is the
   inflation (the clean column is the baseline, measured in the same run);
4. audit them (`geospot.explain.audit.audit`) on the stamped test images: the
   bottom-right corner must be flagged and hold a large share of the Grad-CAM;
5. train again with the mask option (``br:0.25x0.25``, applied in training and
   prediction) and show the inflation is gone.

Prints ONE table. Stamped copies, embeddings and fine-tuning checkpoints live
under --work, so an interrupted or repeated run continues where it stopped.
Runtime: ~20 minutes on 2 (shared) CPU cores for the defaults (600 locations x 2 views).

    python benchmarks/bench_planted_cheat.py [--locations 600] [--views 2] [--work DIR]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, require_shared_data  # noqa: E402

BR = "bottom-right corner"
MASK_SPEC = "br:0.25x0.25"


def log(msg: str) -> None:
    print(f"[planted] {msg}", file=sys.stderr, flush=True)


def sample(manifest, n_locations: int, views: int, seed: int):
    """(train, test) subsets: 80 % of the locations from split=train, 20 % from split=test, `views` views each."""
    df = manifest.df
    rng = np.random.default_rng(seed)
    out = []
    for split, n in (("train", int(round(0.8 * n_locations))), ("test", n_locations - int(round(0.8 * n_locations)))):
        locs = np.asarray(sorted(df.loc[df["split"] == split, "location_id"].astype(str).unique()))
        chosen = set(rng.choice(locs, size=min(n, len(locs)), replace=False))
        rows = df["location_id"].astype(str).isin(chosen)
        if "view" in df.columns:
            keep_views = sorted(df["view"].unique())[:: max(1, len(df["view"].unique()) // views)][:views]
            rows &= df["view"].isin(keep_views)
        out.append(manifest.subset(np.flatnonzero(rows.to_numpy())))
    return out


def stamped(manifest, out_dir: Path, cell_deg: float):
    """Stamped copies (reused when the folder already holds them for the same rows)."""
    from geospot.data.manifest import read_manifest
    from geospot.explain.planted import make_stamped_copy

    path = out_dir / "manifest.csv"
    if path.is_file():
        existing = read_manifest(path)
        if len(existing) == len(manifest) and np.allclose(existing.lat, manifest.lat):
            return existing
    log(f"stamping {len(manifest)} images -> {out_dir}")
    return read_manifest(make_stamped_copy(manifest, out_dir, cell_deg=cell_deg).manifest_path)


def score(model, manifest, cache: Path, backend: str):
    """Per-image metrics of `model` on `manifest` (its mask applied, as in prediction)."""
    from geospot.explain.audit import probs_metrics
    from geospot.pipeline import embed_manifest
    from geospot.train.finetune import model_mask

    res = embed_manifest(manifest, model.encoder_name, mask=model_mask(model), encoder_state=model.encoder_state,
                         cache_dir=cache, backend=backend, progress=False)
    ok = np.asarray(res.ok, bool)
    probs = model.predict_proba(np.asarray(res.embeddings)[ok])
    return probs_metrics(probs, manifest.lat[ok], manifest.lon[ok], model.cells)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--locations", type=int, default=600)
    p.add_argument("--views", type=int, default=2, help="views per location (of 4)")
    p.add_argument("--cell-deg", type=float, default=30.0, help="uploader regions: lat/lon grid in degrees")
    p.add_argument("--work", default=None, help="work folder (stamped copies, embedding cache); default $GEOSPOT_CACHE/bench_planted")
    p.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"])
    p.add_argument("--gradcam-images", type=int, default=64)
    p.add_argument("--grid", type=int, default=3)
    p.add_argument("--unfreeze", type=int, default=2, help="encoder blocks fine-tuned (default 2)")
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (default 3)")
    p.add_argument("--audit-frozen", action="store_true", help="also audit the frozen-encoder model")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from geospot.data.manifest import read_manifest
    from geospot.data.masks import parse_mask
    from geospot.explain.audit import audit, write_audit_report
    from geospot.pipeline import cache_root, fit
    from geospot.train.finetune import FinetuneConfig, finetune
    from geospot.train.fit import TrainConfig

    data = require_shared_data() / "streetview-global"
    work = Path(args.work) if args.work else cache_root() / "bench_planted"
    cache = work / "embeddings"
    t0 = time.perf_counter()
    full = read_manifest(data / "manifest.csv")
    train_clean, test_clean = sample(full, args.locations, args.views, args.seed)
    train_st = stamped(train_clean, work / "stamped_train", args.cell_deg)
    test_st = stamped(test_clean, work / "stamped_test", args.cell_deg)
    n_names = len(set(train_st.df["uploader"]))
    log(f"{len(train_st)} train / {len(test_st)} test images, {n_names} uploader names")

    config = TrainConfig(seed=args.seed)
    common = dict(config=config, cache_dir=cache, backend=args.backend, progress=False)
    mask = parse_mask(MASK_SPEC)

    def tuned(model, run: str, with_mask: bool):
        ft = FinetuneConfig(unfreeze=args.unfreeze, epochs=args.epochs, lr_encoder=1e-3, lr_head=3e-3,
                            seed=args.seed, mask=mask.to_dict() if with_mask else None)
        log(f"fine-tuning ({run}): last {args.unfreeze} blocks, {args.epochs} epochs")
        return finetune(model, train_st, ft, work / run, progress=True)

    log("training: frozen encoder + head on stamped images")
    frozen = fit(train_st, **common)
    cheat = tuned(frozen, "ft_stamped", with_mask=False)
    log("training: frozen encoder + head on stamped images with the mask option " + MASK_SPEC)
    frozen_masked = fit(train_st, cells=frozen.cells, mask=mask, **common)
    masked = tuned(frozen_masked, "ft_stamped_masked", with_mask=True)

    rows = []
    models = [("frozen encoder, stamped train", frozen, args.audit_frozen),
              (f"fine-tuned ({args.unfreeze} blocks), stamped train", cheat, True),
              (f"fine-tuned, stamped train + mask {MASK_SPEC}", masked, True)]
    for i, (label, model, do_audit) in enumerate(models):
        on_stamped = score(model, test_st, cache, args.backend)
        on_clean = score(model, test_clean, cache, args.backend)
        inflation = on_stamped["geoscore"] / on_clean["geoscore"] - 1.0
        flag = br_excess = cam = "-"
        if do_audit:
            log(f"auditing: {label}")
            res = audit(model, test_st, grid=args.grid, gradcam_images=args.gradcam_images, cache_dir=cache,
                        backend=args.backend, progress=False)
            report = write_audit_report(res, work / f"audit_{i}")
            log(f"audit report: {report['markdown']}")
            br = next(r for r in res["masks"] if r["name"] == BR)
            flag = ("yes" if BR in res["flagged"] else "no") + (f" (+{len(res['flagged']) - 1} more)"
                                                                 if BR in res["flagged"] and len(res["flagged"]) > 1 else "")
            br_excess = f"{-br['rel_drop']:+.0%} ({br['excess_drop']:.1f}x)"
            if "gradcam_mass" in br:
                cam = f"{br['gradcam_mass']:.0%} (view {br['view_area']:.0%})"
        rows.append([
            label,
            f"{on_stamped['cell_top1']:.1%}", f"{on_clean['cell_top1']:.1%}",
            f"{on_stamped['acc_750km']:.1%}", f"{on_clean['acc_750km']:.1%}",
            f"{on_stamped['geoscore']:.0f}", f"{on_clean['geoscore']:.0f}", f"{inflation:+.0%}",
            flag, br_excess, cam,
        ])
    print_table(
        ["model", "top-1 stamped", "top-1 clean", "acc@750km stamped", "acc@750km clean", "GeoScore stamped",
         "GeoScore clean", "inflation", "audit flags BR", "BR masked: GeoScore (excess)", "Grad-CAM mass in BR"],
        rows,
        title=(f"Planted uploader stamp, streetview-global: {len(train_st)} train / {len(test_st)} test images, "
               f"{len(cheat.cells)} cells, {n_names} uploader names ({args.cell_deg:g}-degree regions), "
               f"{frozen.encoder_name}; {time.perf_counter() - t0:.0f} s"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
