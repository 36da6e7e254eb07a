"""Core verbs: encoders, cells, embed, train, locate, eval, cv.

Each verb parses, calls the library, prints. Heavy imports happen inside the
verbs so that `geospot --help` and `geospot locate` start quickly.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub) -> None:
    _encoders(sub)
    _cells(sub)
    _embed(sub)
    _train(sub)
    _locate(sub)
    _eval(sub)
    _cv(sub)


# --------------------------------------------------------------------------- shared options


def _runtime_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inference runtime")
    g.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto",
                   help="auto: torch on a GPU when present, else ONNX Runtime (fast on CPU)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda (torch backend)")
    g.add_argument("--cache", metavar="DIR", help="embedding cache folder (default $GEOSPOT_CACHE/embeddings)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def _manifest_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", metavar="NAME", help="use only rows whose `split` column equals NAME")


def _cell_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("geocells (built from the training places)")
    g.add_argument("--cells", metavar="DIR", help="use cells saved by `geospot cells` instead of building them")
    g.add_argument("--scheme", choices=["s2", "grid", "semantic"], default="s2",
                   help="s2: PlaNet's adaptive S2 quadtree; grid: square or hexagonal grid; semantic: PIGEON's "
                        "named admin-unit cells (GeoNames, merged to --min-per-cell, split above --max-per-cell) "
                        "(default s2)")
    g.add_argument("--min-per-cell", type=int, help="s2: drop cells under this many places (default 8); grid: default 1")
    g.add_argument("--max-per-cell", type=int, default=60, help="s2: split cells holding more places (default 60)")
    g.add_argument("--max-level", type=int, default=20, help="s2: deepest level (default 20)")
    g.add_argument("--shape", choices=["square", "hex"], default="square", help="grid: cell shape")
    g.add_argument("--cell-km", type=float, default=100.0, help="grid: cell size in km (default 100)")
    g.add_argument("--region", help="grid: country name/ISO code, 'lat_min,lon_min,lat_max,lon_max' or GeoJSON file")


def _train_opts(p: argparse.ArgumentParser) -> None:
    from geospot.train.config import TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("training the geocell head")
    g.add_argument("--encoder", default="efficientnet-lite0", help="image encoder (see `geospot encoders`)")
    g.add_argument("--loss", choices=["haversine", "ce"], default=d.loss,
                   help="haversine: PIGEON's haversine label smoothing; ce: plain cross-entropy")
    g.add_argument("--tau-km", type=float, default=d.tau_km, help=f"label-smoothing temperature in km (default {d.tau_km})")
    g.add_argument("--hidden", type=int, default=d.hidden, help="hidden units of an MLP head (0 = linear)")
    g.add_argument("--dropout", type=float, default=d.dropout)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience in epochs")
    g.add_argument("--class-weighting", choices=["none", "inv_sqrt"], default=d.class_weighting)
    g.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="fraction of places held out for early stopping when no --val is given")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--mask", metavar="SPEC",
                   help="hide image regions (watermarks) in training AND prediction, e.g. 'bottom:0.1' or 'br:0.3x0.1'")


def _train_config(args):
    from geospot.train.config import TrainConfig

    return TrainConfig(
        loss=args.loss, tau_km=args.tau_km, hidden=args.hidden, dropout=args.dropout, lr=args.lr,
        weight_decay=args.weight_decay, epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
        class_weighting=args.class_weighting, val_fraction=args.val_fraction, seed=args.seed,
    )


def _cell_params(args) -> dict:
    if args.scheme == "semantic":
        return {"scheme": "semantic", "min_per_cell": args.min_per_cell if args.min_per_cell is not None else 8,
                "max_per_cell": args.max_per_cell}
    if args.scheme == "s2":
        return {"scheme": "s2", "min_per_cell": args.min_per_cell if args.min_per_cell is not None else 8,
                "max_per_cell": args.max_per_cell, "max_level": args.max_level}
    params = {"scheme": "grid", "shape": args.shape, "cell_km": args.cell_km,
              "min_per_cell": args.min_per_cell if args.min_per_cell is not None else 1}
    if args.region:
        from geospot.geo.regions import resolve_region

        params["region"] = resolve_region(args.region)
    return params


def read_manifest_or_exit(path: str, split: str | None = None):
    """Read a manifest; bad rows are reported on stderr and left out (the run goes on)."""
    from geospot.data.manifest import ManifestError, read_manifest

    try:
        manifest = read_manifest(path, check_files=True, on_error="drop")
    except ManifestError as exc:  # unrecoverable: e.g. missing required columns
        raise SystemExit(f"error: {exc}")
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot read manifest {path}: {exc}")
    for problem in getattr(manifest, "problems", []) or []:
        print(f"warning: {problem}", file=sys.stderr)
    if split is not None:
        if "split" not in manifest.df.columns:
            raise SystemExit(f"error: {path} has no `split` column (asked for --split {split})")
        manifest = manifest.subset((manifest.df["split"].astype(str) == split).to_numpy().nonzero()[0])
    if len(manifest) == 0:
        raise SystemExit(f"error: {path} has no usable rows" + (f" with split == {split!r}" if split else ""))
    return manifest


def _mask(spec: str | None):
    if not spec:
        return None
    from geospot.data.masks import parse_mask

    try:
        return parse_mask(spec)
    except ValueError as exc:
        raise SystemExit(f"error: --mask: {exc}")


# --------------------------------------------------------------------------- verbs


def _encoders(sub) -> None:
    p = sub.add_parser("encoders", help="list the registered image encoders (or download one's weights)")
    p.add_argument("--download", metavar="NAME",
                   help="explicitly download the weights of a CLIP-family encoder (network; cached under "
                        "$GEOSPOT_CACHE/weights/NAME)")
    p.set_defaults(func=cmd_encoders)


def cmd_encoders(args) -> int:
    from geospot.encoders import create_encoder, encoder_info, list_encoders

    if args.download:
        from geospot.encoders.clip import VARIANTS, download_weights

        if args.download not in VARIANTS:
            raise SystemExit(f"error: {args.download!r} has no downloadable weights; choose from {', '.join(VARIANTS)}")
        print(f"{args.download} weights -> {download_weights(args.download)}")
        return 0
    for name in list_encoders():
        info = encoder_info(name) or {}
        if info.get("large"):  # don't build 300M parameters to print two numbers
            dim, size, note = info["embed_dim"], info["input_size"], "  (weights on request: see docs/encoders.md)"
        else:
            enc = create_encoder(name, pretrained=False)
            dim, size, note = enc.embed_dim, enc.preprocess.size, ""
        print(f"{name:22s} embed_dim={dim:<5d} input={size}px{note}")
    return 0


def _cells(sub) -> None:
    p = sub.add_parser("cells", help="build geocells from a manifest's places and save them")
    p.add_argument("manifest")
    p.add_argument("--out", required=True, help="folder to write cells.json + cells.safetensors")
    _manifest_opts(p)
    _cell_opts(p)
    p.set_defaults(func=cmd_cells)


def cmd_cells(args) -> int:
    import numpy as np

    from geospot.pipeline import build_model_cells

    m = read_manifest_or_exit(args.manifest, args.split)
    cells = build_model_cells(m.lat, m.lon, np.asarray(m.groups), _cell_params(args))
    cells.save(args.out)
    counts = np.asarray(cells.count)
    print(f"{len(cells)} {cells.scheme} cells from {len(set(m.groups))} places -> {args.out}")
    print(f"places per cell: min {counts.min()}, median {int(np.median(counts))}, max {counts.max()}")
    return 0


def _embed(sub) -> None:
    p = sub.add_parser("embed", help="embed a manifest's images into the on-disk cache (resumable)")
    p.add_argument("manifest")
    p.add_argument("--encoder", default="efficientnet-lite0")
    p.add_argument("--mask", metavar="SPEC", help="hide image regions before embedding (see `geospot train --help`)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: chosen for the machine)")
    _manifest_opts(p)
    _runtime_opts(p)
    p.set_defaults(func=cmd_embed)


def cmd_embed(args) -> int:
    from geospot.pipeline import embed_manifest

    m = read_manifest_or_exit(args.manifest, args.split)
    res = embed_manifest(m, args.encoder, mask=_mask(args.mask), cache_dir=args.cache, backend=args.backend,
                         device=args.device, batch_size=args.batch_size, workers=args.workers,
                         progress=not args.quiet)
    n_bad = int((~res.ok).sum())
    for _, reason in sorted(res.errors.items()):
        print(f"error: {reason}", file=sys.stderr)
    print(f"embedded {len(m) - n_bad} of {len(m)} images ({res.embeddings.shape[1]}-d, {args.encoder})"
          + (f"; {n_bad} failed" if n_bad else ""))
    return 1 if n_bad else 0


def _train(sub) -> None:
    p = sub.add_parser("train", help="train a geolocation model (a geocell head on a pretrained encoder)")
    p.add_argument("manifest")
    p.add_argument("--out", required=True, help="model folder to write (config.json + *.safetensors)")
    p.add_argument("--val", metavar="MANIFEST", help="validation manifest for early stopping")
    p.add_argument("--unfreeze", type=int, default=0, metavar="N",
                   help="also fine-tune the last N encoder blocks end to end on images (slow on CPU; "
                        "checkpoints go to OUT.run/ each epoch and a rerun resumes from them)")
    p.add_argument("--finetune-epochs", type=int, default=5, help="epochs of end-to-end fine-tuning (--unfreeze)")
    _manifest_opts(p)
    _cell_opts(p)
    _train_opts(p)
    _runtime_opts(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from geospot.pipeline import fit, save_model

    m = read_manifest_or_exit(args.manifest, args.split)
    val = read_manifest_or_exit(args.val) if args.val else None
    cells = None
    if args.cells:
        from geospot.geo.cells import CellTable

        cells = CellTable.load(args.cells)
    mask = _mask(args.mask)
    config = _train_config(args)
    model = fit(m, encoder=args.encoder, cells=cells, cell_params=_cell_params(args), config=config, mask=mask,
                val_manifest=val, cache_dir=args.cache, backend=args.backend, device=args.device,
                progress=not args.quiet)
    if args.unfreeze > 0:
        from geospot.train.finetune import FinetuneConfig, finetune

        ft = FinetuneConfig(unfreeze=args.unfreeze, epochs=args.finetune_epochs, loss=args.loss, tau_km=args.tau_km,
                            seed=args.seed, device=args.device, mask=mask.to_dict() if mask else None)
        coords = model.train_coords
        model = finetune(model, m, ft, run_dir=Path(args.out).with_name(Path(args.out).name + ".run"),
                         val_manifest=val)
        model.train_coords = coords
    save_model(model, args.out)
    hist = (model.metrics or {}).get("train", {}).get("history", {})
    best = hist.get("best_val_geoscore") or hist.get("best_geoscore")
    print(f"saved model -> {args.out} ({len(model.cells)} cells, encoder {args.encoder}"
          + (f", best validation GeoScore {best:.0f}" if isinstance(best, (int, float)) else "") + ")")
    return 0


def _locate(sub) -> None:
    p = sub.add_parser("locate", help="where was this photo taken? (files, folders or globs)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model)")
    p.add_argument("--top-k", type=int, default=5, help="cells to report and average (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON array (see README for the schema)")
    p.add_argument("--same-place", action="store_true",
                   help="all photos show one place: fuse them into one answer (PIGEON's multi-view averaging)")
    p.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_locate)


def cmd_locate(args) -> int:
    from geospot.models.checkpoint import CheckpointError
    from geospot.predict import Prediction, Predictor, expand_paths, format_prediction

    files, missing = expand_paths(args.paths)
    try:
        predictor = Predictor.load(args.model, backend=args.backend, device=args.device)
    except (CheckpointError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}")
    results = predictor.predict(files, top_k=args.top_k, same_place=args.same_place) if files else []
    results = list(results) + list(missing)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
    else:
        for r in results:
            print(format_prediction(r))
    failed = [r for r in results if not isinstance(r, Prediction)]
    if failed:
        print(f"{len(failed)} of {len(results)} inputs failed", file=sys.stderr)
    return 1 if failed or not results else 0


def _eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model on a manifest, beside the skeptic's baselines")
    p.add_argument("model", help="model folder")
    p.add_argument("manifest")
    p.add_argument("--out", metavar="DIR", help="write report.json, report.md and plots here")
    p.add_argument("--train", metavar="MANIFEST",
                   help="training manifest: adds the article-recipe baseline (and exact training places)")
    p.add_argument("--fuse", choices=["embeddings", "probs", "none"], default="embeddings",
                   help="how views of one location_id are combined (default: average embeddings)")
    p.add_argument("--top-k", type=int, default=5)
    _manifest_opts(p)
    _runtime_opts(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from geospot.eval.table import format_table
    from geospot.pipeline import evaluate, load_model

    model = load_model(args.model)
    m = read_manifest_or_exit(args.manifest, args.split)
    train = read_manifest_or_exit(args.train) if args.train else None
    report = evaluate(model, m, fuse=args.fuse, top_k=args.top_k, train_manifest=train, out_dir=args.out,
                      cache_dir=args.cache, backend=args.backend, device=args.device, progress=not args.quiet)
    print(format_table(report))
    if args.out:
        print(f"report -> {Path(args.out) / 'report.md'}")
    return 0


def _cv(sub) -> None:
    p = sub.add_parser("cv", help="group K-fold cross-validation by location_id, with baselines")
    p.add_argument("manifest")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", metavar="DIR", help="write report.json, report.md and plots here")
    p.add_argument("--fuse", choices=["embeddings", "probs", "none"], default="embeddings")
    p.add_argument("--top-k", type=int, default=5)
    _manifest_opts(p)
    _cell_opts(p)
    _train_opts(p)
    _runtime_opts(p)
    p.set_defaults(func=cmd_cv)


def cmd_cv(args) -> int:
    from geospot.eval.table import format_table
    from geospot.pipeline import cross_validate

    m = read_manifest_or_exit(args.manifest, args.split)
    report = cross_validate(m, folds=args.folds, encoder=args.encoder, cell_params=_cell_params(args),
                            config=_train_config(args), mask=_mask(args.mask), fuse=args.fuse, top_k=args.top_k,
                            seed=args.seed, out_dir=args.out, cache_dir=args.cache, backend=args.backend,
                            device=args.device, progress=not args.quiet)
    print(format_table(report))
    if args.out:
        print(f"report -> {Path(args.out) / 'report.md'}")
    return 0
