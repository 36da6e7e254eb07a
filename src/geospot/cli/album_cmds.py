"""Album options of `geospot locate`, `geospot train` and `geospot geotag` (PlaNet's albums).

    geospot locate --album trip/                         # per photo, with the trip's context (album model, else fuse)
    geospot locate --album a.jpg b.jpg --album-method fuse   # every photo: the album's mean embedding
    geospot train data.csv --out model --album-model     # also train the album model (album.json)
    geospot geotag ~/Pictures --album-by time            # the album model when the model has one

Like `scale_cmds`, this module adds options to verbs that `core` and
`geotag_cmds` define and takes over only when they are used.
"""
from __future__ import annotations

import sys


def register(sub) -> None:
    from geospot.cli import argtypes as t

    locate, train, geotag = (sub.choices.get(v) for v in ("locate", "train", "geotag"))
    if locate is not None:
        g = locate.add_argument_group("albums: photos of one trip, answered per photo")
        g.add_argument("--album", action="store_true",
                       help="all inputs are one album (a trip, in capture-time order): each photo is answered "
                            "with the others' context")
        g.add_argument("--album-method", choices=["auto", "model", "fuse", "average"], default=None,
                       help="model: the album model stored with --model, per photo; fuse: the answer for the "
                            "album's mean embedding, for every photo; average: mean probabilities over the "
                            "album; auto (default): model when the model has one, else fuse")
        core_locate = locate.get_default("func")
        locate.set_defaults(func=lambda args: cmd_locate(args, core_locate))
    if train is not None:
        g = train.add_argument_group("albums")
        g.add_argument("--album-model", action="store_true",
                       help="also train an album model on synthetic trips over the training places "
                            "(stored as album.json + album.safetensors)")
        g.add_argument("--album-epochs", type=t.positive_int, default=15, help="album model epochs (default 15)")
        g.add_argument("--album-hop-km", type=t.positive_float, default=300.0,
                       help="synthetic trips move between places at most this far apart (default 300)")
        core_train = train.get_default("func")
        train.set_defaults(func=lambda args: cmd_train(args, core_train))
    if geotag is not None:
        geotag.add_argument("--album-method", choices=["auto", "model", "fuse"], default="auto",
                            help="--album-by: model = per-photo answers from the album model stored with --model; "
                                 "fuse = one answer per album from the mean embedding; auto (default): model "
                                 "when the model has one, else fuse")


def cmd_locate(args, core_locate) -> int:
    if not args.album:
        if args.album_method is not None:
            raise SystemExit("error: --album-method applies to --album only")
        return core_locate(args)
    from geospot.albums import locate_album
    from geospot.encoders.onnx_runtime import OnnxRecordMissing, OnnxVerificationError
    from geospot.models.album import AlbumError
    from geospot.models.checkpoint import CheckpointError
    from geospot.cli.core import report_locate
    from geospot.predict import Prediction, Predictor, expand_paths
    from geospot.viz.files import check_map_options

    if args.same_place:
        raise SystemExit("error: --album and --same-place: give one (--same-place: one place, one answer; "
                         "--album: one trip, an answer per photo)")
    from geospot.models.pretrained import pretrained_name

    if args.gallery or pretrained_name(args.model):
        raise SystemExit("error: --album needs a geospot model folder (--model DIR), not a pretrained model")
    files, missing = expand_paths(args.paths)
    check_map_options(args.map, args.map_dir, len(files), False)
    results, method, predictor = [], None, None
    if files:
        try:
            options = {"estimate": args.estimate} if args.estimate else {}
            if getattr(args, "tta", None):
                from geospot.cli.options import TTA_VIEWS

                options["views"] = TTA_VIEWS[args.tta]
            predictor = Predictor.load(args.model, backend=args.backend, device=args.device,
                                       precision=args.precision, **options)
            results, method = locate_album(predictor, files, method=args.album_method or "auto",
                                           top_k=args.top_k)
        except (CheckpointError, FileNotFoundError, OnnxVerificationError, OnnxRecordMissing, AlbumError) as exc:
            raise SystemExit(f"error: {exc}")
        n_ok = sum(isinstance(r, Prediction) for r in results)
        what = {"model": "the album model", "average": "probabilities averaged over the album",
                "fuse": "the album's mean embedding"}[method]
        print(f"album of {n_ok} photo(s), answered with {what}", file=sys.stderr)
    return report_locate(list(results) + list(missing), predictor, args, files, extra={"album_method": method})


def cmd_train(args, core_train) -> int:
    if not args.album_model:
        return core_train(args)
    if args.unfreeze or getattr(args, "store", None):
        raise SystemExit("error: --album-model trains on frozen-encoder embeddings of manifests: "
                         "not with --unfreeze or --store")
    rc = core_train(args)
    if rc:
        return rc
    from pathlib import Path

    import numpy as np

    from geospot.cli.options import mask_of, read_manifests_or_exit, views_of
    from geospot.models.checkpoint import GeoModel
    from geospot.train.album import AlbumConfig, train_album_model
    from geospot.workflows.embedding import embeddings_or_compute

    m = read_manifests_or_exit(args.manifest, args.split)
    model = GeoModel.load(args.out)
    emb, ok = embeddings_or_compute(m, None, args.encoder, mask_of(args.mask), args.cache, args.backend, args.device,
                                    not args.quiet, "album", views=views_of(args))
    cfg = AlbumConfig(epochs=args.album_epochs, hop_km=args.album_hop_km, seed=args.seed, tau_km=args.tau_km)
    groups = np.asarray(m.groups)[ok]
    if len(set(groups.tolist())) < cfg.oof_folds:
        raise SystemExit(f"error: --album-model needs at least {cfg.oof_folds} places, got {len(set(groups.tolist()))}")
    net, summary = train_album_model(model, emb[ok], m.lat[ok], m.lon[ok], groups, cfg, progress=not args.quiet)
    net.save(Path(args.out), model.cells.hash(), summary)
    print(f"saved album model -> {Path(args.out) / 'album.json'} ({summary['trips_per_epoch']} synthetic trips "
          f"per epoch over {summary['places']} places, loss {summary['loss_history'][-1]:.3f})")
    return 0
