"""Core verbs: encoders, cells, embed, train, locate, eval, cv.

Each verb parses, calls the library, prints. Heavy imports happen inside the
verbs so that `geospot --help` and `geospot locate` start quickly.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from geospot.cli import argtypes as t
from geospot.cli.options import (
    TTA_VIEWS, cell_opts, cell_params, estimate_opt, manifest_opts, mask_of, read_manifest_or_exit,
    read_manifests_or_exit, runtime_opts, train_config, train_opts, tta_opt, views_of,
)
from geospot.encoders import DEFAULT_ENCODER


def register(sub) -> None:
    _encoders(sub)
    _cells(sub)
    _embed(sub)
    _train(sub)
    _locate(sub)
    _eval(sub)
    _cv(sub)


# --------------------------------------------------------------------------- verbs


def _encoders(sub) -> None:
    p = sub.add_parser("encoders", help="list the registered image encoders (or download one's weights)")
    p.add_argument("--download", metavar="NAME",
                   help="explicitly download the weights of a CLIP-family encoder (network; cached under "
                        "$GEOSPOT_CACHE/weights/NAME)")
    p.add_argument("--quantize", metavar="NAME",
                   help="make the int8 ONNX variant of encoder NAME, calibrated on --calibration photos "
                        "(then `geospot locate --precision int8`)")
    p.add_argument("--calibration", nargs="+", metavar="PATH",
                   help="photos, folders or globs to calibrate --quantize on (a few hundred of your own)")
    p.add_argument("--calibration-limit", type=int, default=128, help="photos used for calibration (default 128)")
    p.set_defaults(func=cmd_encoders)


def cmd_encoders(args) -> int:
    from geospot.encoders import create_encoder, encoder_info, list_encoders

    if args.quantize:
        return _quantize(args)
    if args.download:
        from geospot.models.catalog import download_or_exit  # resumable, verified; one line on failure

        return download_or_exit(args.download)
    for name in list_encoders():
        info = encoder_info(name) or {}
        if info.get("large"):  # don't build 300M parameters to print two numbers
            dim, size, note = info["embed_dim"], info["input_size"], "  (weights on request: see docs/encoders.md)"
        else:
            enc = create_encoder(name, pretrained=False)
            dim, size, note = enc.embed_dim, enc.preprocess.size, ""
        print(f"{name:22s} embed_dim={dim:<5d} input={size}px{note}")
    return 0


def _quantize(args) -> int:
    from geospot.encoders.onnx_runtime import OnnxRecordMissing
    from geospot.encoders.quantize import quantize_encoder
    from geospot.predict import expand_paths

    if not args.calibration:
        raise SystemExit("error: --quantize needs --calibration PHOTOS (a few hundred photos like the ones you locate)")
    if args.calibration_limit < 1:
        raise SystemExit(f"error: --calibration-limit must be >= 1 (got {args.calibration_limit})")
    photos, missing = expand_paths(args.calibration)
    for m in missing:
        print(f"warning: {m.path}: {m.error}", file=sys.stderr)
    if not photos:
        raise SystemExit("error: --calibration: no photos found")
    try:
        out = quantize_encoder(args.quantize, photos, limit=args.calibration_limit)
    except OnnxRecordMissing:  # no fp32 export yet: make it once (torch), then quantise
        from geospot.encoders.runtime import EncoderRuntime

        EncoderRuntime(args.quantize, backend="onnx", device="cpu")
        out = quantize_encoder(args.quantize, photos, limit=args.calibration_limit)
    print(f"int8 {args.quantize} -> {out} (calibrated on {min(len(photos), args.calibration_limit)} photos)")
    return 0


def _cells(sub) -> None:
    p = sub.add_parser("cells", help="build geocells from a manifest's places and save them")
    p.add_argument("manifest")
    p.add_argument("--out", required=True, help="folder to write cells.json + cells.safetensors")
    p.add_argument("--map", metavar="PNG", help="also draw the cells on a map, coloured by places per cell")
    manifest_opts(p)
    cell_opts(p)
    p.set_defaults(func=cmd_cells)


def cmd_cells(args) -> int:
    import numpy as np

    from geospot.pipeline import build_model_cells

    m = read_manifest_or_exit(args.manifest, args.split)
    cells = build_model_cells(m.lat, m.lon, np.asarray(m.groups), cell_params(args))
    cells.save(args.out)
    counts = np.asarray(cells.count)
    print(f"{len(cells)} {cells.scheme} cells from {len(set(m.groups))} places -> {args.out}")
    print(f"places per cell: min {counts.min()}, median {int(np.median(counts))}, max {counts.max()}")
    if args.map:
        from geospot.viz.files import save_cells_map

        print(f"map -> {save_cells_map(cells, args.map)}")
    return 0


def _embed(sub) -> None:
    p = sub.add_parser("embed", help="embed a manifest's images into the on-disk cache (resumable)")
    p.add_argument("manifest")
    p.add_argument("--encoder", type=t.encoder, default=DEFAULT_ENCODER, help="image encoder (see `geospot encoders`)")
    p.add_argument("--mask", metavar="SPEC", help="hide image regions before embedding (see `geospot train --help`)")
    p.add_argument("--batch-size", type=t.positive_int, default=32, help="images per inference batch")
    p.add_argument("--workers", type=t.positive_int, default=None, help="decoding threads (default: chosen for the machine)")
    tta_opt(p, "cached apart from single-view embeddings (default none)")
    manifest_opts(p)
    runtime_opts(p)
    p.set_defaults(func=cmd_embed)


def cmd_embed(args) -> int:
    from geospot.pipeline import embed_manifest

    m = read_manifest_or_exit(args.manifest, args.split)
    res = embed_manifest(m, args.encoder, mask=mask_of(args.mask), cache_dir=args.cache, backend=args.backend,
                         device=args.device, batch_size=args.batch_size, workers=args.workers,
                         progress=not args.quiet, views=views_of(args))
    n_bad = int((~res.ok).sum())
    for _, reason in sorted(res.errors.items()):
        print(f"error: {reason}", file=sys.stderr)
    tta = f", {args.tta} TTA" if args.tta != "none" else ""
    print(f"embedded {len(m) - n_bad} of {len(m)} images ({res.embeddings.shape[1]}-d, {args.encoder}{tta}; "
          f"reused {res.reused} from the cache, embedded {res.computed} now)" + (f"; {n_bad} failed" if n_bad else ""))
    return 1 if n_bad else 0


def _train(sub) -> None:
    p = sub.add_parser("train", help="train a geolocation model (a geocell head on a pretrained encoder)")
    p.add_argument("manifest", nargs="+",
                   help="one manifest, or several (NAME=PATH names a collection): calibration then holds out "
                        "one collection at a time")
    p.add_argument("--out", required=True, help="model folder to write (config.json + *.safetensors)")
    p.add_argument("--val", metavar="MANIFEST", help="validation manifest for early stopping")
    p.add_argument("--unfreeze", type=t.nonneg_int, default=0, metavar="N",
                   help="also fine-tune the last N encoder blocks end to end on images (slow on CPU; "
                        "checkpoints go to OUT.run/ each epoch and a rerun resumes from them)")
    p.add_argument("--finetune-epochs", type=t.positive_int, default=5, help="epochs of end-to-end fine-tuning (--unfreeze)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="skip calibration (by default the head is calibrated on out-of-fold predictions: "
                        "leave-one-collection-out when the data has a `collection` column, else 5-fold by place)")
    p.add_argument("--familiarity-quantile", type=t.float_range(0.0, 0.5), default=0.01, metavar="Q",
                   help="photos less like the training photos than this share of held-out photos answer with "
                        "max_geoscore; fitted with the calibration (0 turns the gate off; default 0.01)")
    estimate_opt(p, "stored in the model; default local_mean")
    tta_opt(p, "used for the training embeddings and recorded in the model, so locate, eval and serve use it "
                "too; --unfreeze still fine-tunes on the centre crop (default none)")
    manifest_opts(p)
    cell_opts(p)
    train_opts(p)
    runtime_opts(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from geospot.cli.methods_cmds import train_method_options
    from geospot.pipeline import fit, save_model

    m = read_manifests_or_exit(args.manifest, args.split)
    val = read_manifest_or_exit(args.val) if args.val else None
    cells = None
    if args.cells:
        from geospot.geo.cells import CellTable

        cells = CellTable.load(args.cells)
    mask = mask_of(args.mask)
    config = train_config(args)
    methods = train_method_options(args)
    model = fit(m, encoder=args.encoder, cells=cells, cell_params=cell_params(args), config=config, mask=mask,
                val_manifest=val, calibrate=not args.no_calibrate, estimate=args.estimate, cache_dir=args.cache,
                backend=args.backend, device=args.device, progress=not args.quiet, views=views_of(args),
                familiarity_quantile=args.familiarity_quantile, **methods)
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
    best = hist.get("best_val_geoscore")
    cal = model.calibration
    print(f"saved model -> {args.out} ({len(model.cells)} cells, encoder {args.encoder}"
          + (f", best validation GeoScore {best:.0f} at epoch {hist.get('best_epoch')}"
             if isinstance(best, (int, float)) else "")
          + (f"; calibrated on {cal.fitted_on}: temperature {cal.temperature:.2f}, prior weight "
             f"{cal.prior_weight:.3f}, kernel {cal.kernel_km:.0f} km" if cal is not None else "") + ")")
    return 0


def _locate(sub) -> None:
    p = sub.add_parser("locate", help="where was this photo taken? (files, folders or globs)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model), or a pretrained "
                   "model: geoclip, zeroshot:streetclip (see `geospot models`)")
    p.add_argument("--gallery", metavar="CSV", help="--model geoclip: candidate coordinates (lat,lon columns) "
                   "instead of GeoCLIP's 100K gallery")
    p.add_argument("--top-k", type=t.positive_int, default=5, help="cells to report and average (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON array (see README for the schema)")
    p.add_argument("--same-place", action="store_true",
                   help="all photos show one place: fuse them into one answer (PIGEON's multi-view averaging)")
    estimate_opt(p, "default: the model's, else local_mean")
    p.add_argument("--map", metavar="PNG", help="draw the answer's probability map (one photo or --same-place)")
    p.add_argument("--map-dir", metavar="DIR", help="draw one probability map per answer into DIR (<photo>.map.png)")
    p.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto",
                   help="auto: ONNX Runtime without torch for frozen-encoder models (fastest start), else as embed")
    p.add_argument("--device", type=t.device, default="auto", help="auto | cpu | cuda[:N] | mps (torch backend)")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                   help="int8: the quantised encoder made by `geospot encoders --quantize` (faster, approximate)")
    tta_opt(p, "overrides the model's own (default: what the model was trained with)", default=None)
    p.set_defaults(func=cmd_locate)


def cmd_locate(args) -> int:
    from geospot.encoders.onnx_runtime import OnnxRecordMissing, OnnxVerificationError
    from geospot.models.checkpoint import CheckpointError
    from geospot.predict import Predictor, expand_paths

    files, missing = expand_paths(args.paths)
    if args.gallery and args.model != "geoclip":
        raise SystemExit("error: --gallery applies to --model geoclip only")
    from geospot.viz.files import check_map_options

    check_map_options(args.map, args.map_dir, len(files), args.same_place)
    results, predictor = [], None
    if files:  # nothing to answer: report the bad names without loading a model

        try:
            options = {"gallery": args.gallery} if args.gallery else {}
            if args.estimate:
                options["estimate"] = args.estimate
            if args.precision != "fp32":
                options["precision"] = args.precision
            views = TTA_VIEWS[args.tta] if args.tta else None
            predictor = Predictor.load(args.model, backend=args.backend, device=args.device, views=views, **options)
        except (CheckpointError, FileNotFoundError, OnnxVerificationError, OnnxRecordMissing) as exc:
            raise SystemExit(f"error: {exc}")
        except ValueError as exc:  # a bad --gallery file, --tta with a pretrained model
            if not (args.gallery or args.tta):
                raise
            raise SystemExit(f"error: {exc}")
        results = predictor.predict(files, top_k=args.top_k, same_place=args.same_place)
    return report_locate(list(results) + list(missing), predictor, args, files)


def report_locate(results, predictor, args, files, extra: dict | None = None) -> int:
    """Print `locate`'s answers (text or ``--json``, each answer's JSON with ``extra``), draw its maps;
    the exit code: 1 if any input failed or none was answered."""
    from geospot.predict import Prediction, format_prediction
    from geospot.viz.files import save_locate_maps

    if args.json:
        print(json.dumps([dict(r.to_dict(), **(extra or {}) if isinstance(r, Prediction) else {})
                          for r in results], indent=2, ensure_ascii=False))
    else:
        for r in results:
            print(format_prediction(r))
    if files:
        save_locate_maps(results, predictor.model.cells, args.map, args.map_dir)
    failed = [r for r in results if not isinstance(r, Prediction)]
    if failed:
        print(f"{len(failed)} of {len(results)} inputs failed", file=sys.stderr)
    return 1 if failed or not results else 0


def _eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model on a manifest, beside the skeptic's baselines")
    p.add_argument("model", help="model folder, or a pretrained model: geoclip, zeroshot:streetclip")
    p.add_argument("manifest")
    p.add_argument("--gallery", metavar="CSV", help="geoclip: candidate coordinates instead of its 100K gallery")
    p.add_argument("--out", metavar="DIR", help="write report.json, report.md and plots here")
    p.add_argument("--train", metavar="MANIFEST",
                   help="training manifest: adds the article-recipe baseline (and exact training places)")
    p.add_argument("--train-split", metavar="NAME",
                   help="use only these rows of --train (default with --split: the rows of --train whose split "
                        "is NOT --split, so the baselines never see test places)")
    p.add_argument("--allow-overlap", action="store_true",
                   help="evaluate even if test places also appear in --train (reported loudly); refused by default")
    p.add_argument("--fuse", choices=["embeddings", "probs", "none"], default="embeddings",
                   help="how views of one location_id are combined (default: average embeddings)")
    p.add_argument("--top-k", type=t.positive_int, default=5, help="cells averaged into the point estimate")
    estimate_opt(p, "default: the model's, else local_mean")
    manifest_opts(p)
    runtime_opts(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from geospot.eval.table import format_table
    from geospot.workflows.evaluation import evaluate
    from geospot.workflows.training import load_model

    from geospot.models.pretrained import load_pretrained_model, pretrained_name

    if args.gallery and args.model != "geoclip":
        raise SystemExit("error: --gallery applies to the geoclip model only")
    pretrained = pretrained_name(args.model)
    model = None if pretrained else load_model(args.model)  # a broken model fails before any data is read
    m = read_manifest_or_exit(args.manifest, args.split)
    if pretrained:  # checked after the manifest: it may embed a 100K gallery first
        try:
            model = load_pretrained_model(pretrained, gallery=args.gallery)
        except (FileNotFoundError, ValueError) as exc:
            raise SystemExit(f"error: {exc}")
    train = _train_rows(args) if args.train else None
    if pretrained and train is not None:  # no head to retrain: the training places feed the baselines only
        from geospot.workflows.training import location_table

        model.train_coords = location_table(train.lat, train.lon, train.groups)
        train = None
    from geospot.encoders.clip import WeightsNotAvailable

    try:
        report = evaluate(model, m, fuse=args.fuse, top_k=args.top_k, estimate=args.estimate, train_manifest=train,
                          allow_overlap=args.allow_overlap, out_dir=args.out, cache_dir=args.cache,
                          backend=args.backend, device=args.device, progress=not args.quiet)
    except WeightsNotAvailable as exc:  # pretrained weights never downloaded: one line saying what to run
        raise SystemExit(f"error: {' '.join(str(exc).split())}")
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    print(format_table(report))
    from geospot.cli.methods_cmds import admin_lines

    for line in admin_lines(report):
        print(line)
    for c in (report.get("comparisons") or {}).values():
        print(c["text"])
    cal = report.get("calibration") or {}
    if "coverage_90" in cal:
        print(f"true location inside the 50% radius for {100 * cal['coverage_50']:.0f}% of photos, "
              f"inside the 90% radius for {100 * cal['coverage_90']:.0f}%")
    if args.out:
        print(f"report -> {Path(args.out) / 'report.md'}")
    return 0


def _train_rows(args):
    """The --train manifest, filtered like the test set: --train-split, or the complement of --split."""
    train = read_manifest_or_exit(args.train, args.train_split)
    if args.train_split is None and args.split is not None and "split" in train.df.columns:
        keep = (train.df["split"].astype(str) != args.split).to_numpy().nonzero()[0]
        if len(keep) == 0:
            raise SystemExit(f"error: every row of {args.train} has split == {args.split!r}; nothing to train on")
        train = train.subset(keep)
        print(f"baselines train on the {len(train)} rows of {args.train} whose split is not {args.split!r}",
              file=sys.stderr)
    return train


def _cv(sub) -> None:
    p = sub.add_parser("cv", help="cross-validation by location or by collection, with baselines")
    p.add_argument("manifest", nargs="+",
                   help="one manifest, or several (NAME=PATH names a collection; they are combined with a "
                        "`collection` column)")
    p.add_argument("--folds", type=t.int_range(2), default=5, help="K of group K-fold by location_id (>= 2)")
    p.add_argument("--group-by", metavar="COLUMN",
                   help="one fold per value of COLUMN, trained on all the others (e.g. 'collection': "
                        "leave-one-collection-out, the honest check on photos from elsewhere); default with "
                        "several manifests")
    p.add_argument("--no-calibrate", action="store_true", help="score the raw head (no calibration)")
    p.add_argument("--out", metavar="DIR", help="write report.json, report.md and plots here")
    p.add_argument("--fuse", choices=["embeddings", "probs", "none"], default="embeddings",
                   help="how views of one location_id are combined")
    p.add_argument("--top-k", type=t.positive_int, default=5, help="cells averaged into the point estimate")
    estimate_opt(p, "default local_mean")
    tta_opt(p, "for every photo, training and held-out alike (default none)")
    manifest_opts(p)
    cell_opts(p)
    train_opts(p)
    runtime_opts(p)
    p.set_defaults(func=cmd_cv)


def cmd_cv(args) -> int:
    from geospot.eval.table import format_folds, format_table
    from geospot.workflows.crossval import cross_validate

    m = read_manifests_or_exit(args.manifest, args.split)
    group_by = args.group_by or ("collection" if len(args.manifest) > 1 else None)
    try:
        report = cross_validate(m, folds=args.folds, group_by=group_by, encoder=args.encoder,
                                cell_params=cell_params(args), config=train_config(args), mask=mask_of(args.mask),
                                fuse=args.fuse, top_k=args.top_k, estimate=args.estimate,
                                calibrate=not args.no_calibrate, seed=args.seed, out_dir=args.out,
                                cache_dir=args.cache, backend=args.backend, device=args.device,
                                progress=not args.quiet, views=views_of(args))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    print(format_table(report))
    print(format_folds(report))
    if args.out:
        print(f"report -> {Path(args.out) / 'report.md'}")
    return 0
