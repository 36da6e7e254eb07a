"""Scale options of `geospot embed` and `geospot train`: sharded datasets, memory-mapped
embeddings, and `torchrun` (several processes, GPUs, nodes).

These verbs keep their one-process behaviour; this module adds options to them
and takes over only when they are used or when the command runs under torchrun:

    torchrun --nproc-per-node 4 -m geospot embed 'shards/{00000..00099}.tar' --store runs/emb
    torchrun --nproc-per-node 4 -m geospot train runs/emb --out runs/m1
    geospot embed manifest.csv --export embeddings.parquet

`geospot train STORE` (a folder written by `embed --store`) trains with batches
streamed from the memory-mapped embeddings; under torchrun it trains with DDP.
`geospot train MANIFEST` under torchrun first embeds into `OUT.run/embeddings`.
"""
from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    embed, train = sub.choices.get("embed"), sub.choices.get("train")
    if embed is not None:
        g = embed.add_argument_group("scale: memory-mapped store, export, torchrun")
        _store_opts(g)
        g.add_argument("--export", metavar="FILE.parquet",
                       help="also write every row's path, lat, lon, ok and embedding (a list column) to Parquet")
        core_embed = embed.get_default("func")
        embed.set_defaults(func=lambda args: cmd_embed(args, core_embed))
    if train is not None:
        g = train.add_argument_group("scale: memory-mapped store, torchrun")
        _store_opts(g)
        g.add_argument("--finetune-batch-size", type=int, default=32, metavar="N",
                       help="--unfreeze with a store or under torchrun: the GLOBAL batch of fine-tuning, "
                            "split over the processes (default 32)")
        g.add_argument("--workers", type=int, default=None, metavar="N",
                       help="image-decoding threads per process (embedding, and --unfreeze: default 2)")
        core_train = train.get_default("func")
        train.set_defaults(func=lambda args: cmd_train(args, core_train))


def _store_opts(g) -> None:
    g.add_argument("--store", metavar="DIR", help="embed: write the embeddings as a memory-mapped store here; "
                                                  "train: where to embed a manifest first under torchrun")
    g.add_argument("--store-dtype", choices=["float16", "float32"], default="float16",
                   help="store precision (float16 halves disk and page cache; default)")
    g.add_argument("--rows-per-shard", type=int, default=10_000, metavar="N",
                   help="for manifests: rows per unit of work (tar/zip datasets use one archive per unit)")


def _scaled(args) -> bool:
    from geospot.train.dist import launched

    return bool(getattr(args, "store", None) or getattr(args, "export", None) or launched())


def _views(args) -> str:
    """The views of --tta and --frame (`Preprocess.views`)."""
    from geospot.cli.options import views_of

    return views_of(args)


def _read(path: str, split: str | None, main: bool):
    """Rank 0 reports the manifest's problems; the other ranks read it quietly."""
    from geospot.cli.options import read_manifest_or_exit

    if main:
        return read_manifest_or_exit(path, split)
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):
        return read_manifest_or_exit(path, split)


def _embed_to_store(args, manifest, ctx, store, export, mask):
    from geospot.encoders import create_encoder
    from geospot.encoders.runtime import EncoderRuntime
    from geospot.encoders.sharded import embed_sharded
    from geospot.pipeline import cache_root
    from geospot.train import dist

    enc = create_encoder(args.encoder, pretrained=True)
    device = str(ctx.device) if args.device == "auto" else args.device
    runtime = EncoderRuntime(args.encoder, backend=args.backend, device=device, encoder=enc)
    preprocess = enc.preprocess.with_views(_views(args))
    meta = {"encoder": args.encoder, "weights_id": runtime.weights_id, "preprocess": preprocess.to_dict(),
            "mask": mask.to_dict() if mask is not None and not mask.is_empty else None,
            "manifest": str(manifest.source)}
    return embed_sharded(
        manifest, runtime, preprocess, cache_dir=args.cache or cache_root() / "embeddings", rank=ctx.rank,
        world_size=ctx.world_size, barrier=dist.barrier, mask=mask, batch_size=getattr(args, "batch_size", 32)
        if args.command == "embed" else 32, workers=getattr(args, "workers", None),
        rows_per_shard=args.rows_per_shard, store=store, store_dtype=args.store_dtype, export=export,
        store_meta=meta, progress=not args.quiet)


def cmd_embed(args, core_embed) -> int:
    if not _scaled(args):
        return core_embed(args)
    from geospot.cli.options import mask_of
    from geospot.train import dist

    ctx = dist.init(device=args.device)
    try:
        manifest = _read(args.manifest, args.split, ctx.is_main)
        res = _embed_to_store(args, manifest, ctx, args.store, args.export, mask_of(args.mask))
        if not ctx.is_main:
            return 0
        for _, reason in sorted(res.errors.items()):
            print(f"error: {reason}", file=sys.stderr)
        n_bad = res.n - res.n_ok
        where = ", ".join(str(p) for p in (res.store, res.export) if p)
        print(f"embedded {res.n_ok} of {res.n} images ({res.dim}-d, {args.encoder}) on {ctx.world_size} "
              f"process(es)" + (f"; {n_bad} failed" if n_bad else "") + (f" -> {where}" if where else ""))
        return 1 if n_bad else 0
    finally:
        dist.barrier()
        dist.shutdown()


def cmd_train(args, core_train) -> int:
    from geospot.encoders.store import is_store

    specs = args.manifest if isinstance(args.manifest, list) else [args.manifest]
    if len(specs) > 1:  # several collections: the calibrated single-process path
        if _scaled(args):
            raise SystemExit("error: several manifests are not supported with a store or under torchrun yet; "
                             "pass one manifest (or train them on one process)")
        return core_train(args)
    if not (is_store(specs[0]) or _scaled(args)):
        return core_train(args)
    args.manifest = specs[0]
    from geospot.train import dist

    ctx = dist.init(device=args.device)
    try:
        return _train(args, ctx)
    finally:
        dist.barrier()
        dist.shutdown()


def _train(args, ctx) -> int:
    import numpy as np

    from geospot.cli.options import cell_params, mask_of, train_config
    from geospot.encoders import DEFAULT_ENCODER
    from geospot.encoders.store import EmbeddingStore, is_store
    from geospot.train.stream import train_head_streaming

    if args.finetune_batch_size < 1 or (args.workers is not None and args.workers < 1):
        raise SystemExit("error: --finetune-batch-size and --workers must be >= 1")
    run_dir = Path(args.out).with_name(Path(args.out).name + ".run")
    store_dir = Path(args.manifest)
    if not is_store(store_dir):
        manifest = _read(args.manifest, args.split, ctx.is_main)
        store_dir = Path(args.store) if args.store else run_dir / "embeddings"
        _embed_to_store(args, manifest, ctx, store_dir, None, mask_of(args.mask))
        from geospot.train import dist

        dist.barrier()  # rank 0 finished the store
    st = EmbeddingStore.open(store_dir)
    enc = st.meta["encoder"]
    if args.encoder not in (enc, DEFAULT_ENCODER):
        raise SystemExit(f"error: {store_dir} holds {enc} embeddings, not {args.encoder}")
    mask = mask_of(args.mask)
    if args.mask and (mask.to_dict() if not mask.is_empty else None) != st.meta.get("mask"):
        raise SystemExit(f"error: {store_dir} was embedded with mask {st.meta.get('mask')}, not {args.mask!r}")
    stored_views = st.meta["preprocess"].get("views", "center")
    asked = ((args.tta and args.tta != "none") or getattr(args, "frame", None)) and _views(args)
    if asked and stored_views != asked:
        raise SystemExit(f"error: {store_dir} was embedded with views {stored_views!r}, not {asked!r} (--tta/--frame); "
                         f"embed it again with `geospot embed ... --store DIR` and the same options")
    rows = np.flatnonzero(np.asarray(st.ok))
    if args.split and is_store(args.manifest):
        if "split" not in st.index.columns:
            raise SystemExit(f"error: {store_dir} has no `split` column (asked for --split {args.split})")
        rows = rows[(st.index["split"].astype(str).to_numpy()[rows] == args.split)]
    if len(rows) == 0:
        raise SystemExit(f"error: {store_dir} has no usable rows")
    val, val_manifest = _val_store(args, st, ctx, run_dir) if args.val else (None, None)
    lat, lon, groups = st.lat, st.lon, st.groups
    if args.cells:
        from geospot.geo.cells import CellTable

        cells = CellTable.load(args.cells)
    else:
        from geospot.pipeline import build_model_cells

        cells = build_model_cells(lat[rows], lon[rows], groups[rows], cell_params(args))
    if ctx.is_main:
        print(f"training on {len(rows)} images, {len(cells)} cells, {ctx.world_size} process(es), "
              f"batches streamed from {store_dir}", file=sys.stderr)
    config = train_config(args)
    collections = st.index["collection"].astype(str).to_numpy() if "collection" in st.index.columns else None
    calibration = familiarity = None
    if not args.no_calibrate and not args.unfreeze:  # fine-tuning changes the model: `finetune` drops it too
        from geospot.train.calibrate_stream import calibrate_streaming, familiarity_streaming
        from geospot.workflows.training import scaled_estimates

        familiarity = (familiarity_streaming(st.emb, groups, rows, config.seed, collections=collections,
                                             quantile=args.familiarity_quantile)
                       if ctx.is_main else None)  # only rank 0 saves the model
        calibration, _ = calibrate_streaming(st.emb, lat, lon, groups, rows, config, collections=collections,
                                             cells=cells if args.cells else None,
                                             cell_params=None if args.cells else cell_params(args),
                                             estimates=scaled_estimates((args.estimate,) if args.estimate else None,
                                                                        familiarity), ctx=ctx)
    head, hist = train_head_streaming(st.emb, lat, lon, cells, config, groups=groups, rows=rows, ctx=ctx,
                                      state_dir=run_dir / "head_state", progress=not args.quiet, val=val)
    model = _model(args, st, head, hist, cells, config, calibration, lat[rows], lon[rows], groups[rows])
    model.familiarity = familiarity
    if args.unfreeze:
        model = _finetune(args, model, st, rows, ctx, run_dir, mask, val_manifest)
    if ctx.is_main:
        from geospot.workflows.training import save_model

        save_model(model, args.out)
        ft = (model.metrics or {}).get("finetune")
        speed = (f"fine-tuned {args.unfreeze} block(s) at {ft['rows_per_s']:.1f} rows/s" if ft
                 else f"{hist['rows_per_s']:.0f} rows/s")
        cal = model.calibration
        print(f"saved model -> {args.out} ({len(cells)} cells, encoder {st.meta['encoder']}, "
              f"{ctx.world_size} process(es), {speed}"
              + (f"; calibrated on {cal.fitted_on}: temperature {cal.temperature:.2f}, prior weight "
                 f"{cal.prior_weight:.3f}, kernel {cal.kernel_km:.0f} km" if cal is not None else "") + ")")
    return 0


def _model(args, st, head, hist, cells, config, calibration, lat, lon, groups):
    """The GeoModel of a streamed head (every rank builds it; rank 0 saves it)."""
    from geospot.models.checkpoint import GeoModel
    from geospot.models.distribution import support_from_places
    from geospot.workflows.training import _medoid, location_table

    loc_lat, loc_lon = location_table(lat, lon, groups)
    metrics = {"train": {"images": int(len(lat)), "places": int(len(loc_lat)), "cells": len(cells),
                         "history": {k: v for k, v in hist.items() if not isinstance(v, list)},
                         "medoid": list(_medoid(loc_lat, loc_lon))}}
    model = GeoModel(encoder_name=st.meta["encoder"], preprocess=st.meta["preprocess"], head=head, cells=cells,
                     train_config=config.to_dict(), metrics=metrics, mask=st.meta.get("mask"),
                     support=support_from_places(cells, loc_lat, loc_lon, seed=config.seed), calibration=calibration,
                     estimate=args.estimate)
    model.train_coords = (loc_lat, loc_lon)
    return model


def _val_store(args, st, ctx, run_dir):
    """`--val MANIFEST`: embedded (on every rank, merged by rank 0) with the store's encoder and mask
    into `OUT.run/val_embeddings`; returns the streamed validation set and the manifest."""
    import numpy as np

    from geospot.data.masks import Mask
    from geospot.encoders.store import EmbeddingStore
    from geospot.train import dist

    manifest = _read(args.val, None, ctx.is_main)
    args.encoder = st.meta["encoder"]
    mask = Mask.from_dict(st.meta["mask"]) if st.meta.get("mask") else None
    out = run_dir / "val_embeddings"
    _embed_to_store(args, manifest, ctx, out, None, mask)
    dist.barrier()  # rank 0 finished the store
    vs = EmbeddingStore.open(out)
    if vs.meta.get("weights_id") != st.meta.get("weights_id"):
        raise SystemExit(f"error: {args.val} was embedded with other encoder weights than {st.root}")
    v_rows = np.flatnonzero(np.asarray(vs.ok))
    if len(v_rows) == 0:
        raise SystemExit(f"error: --val {args.val}: no image could be embedded")
    return (vs.emb, vs.lat, vs.lon, v_rows), manifest


def _finetune(args, model, st, rows, ctx, run_dir, mask, val_manifest=None):
    """`--unfreeze N` on the store's images (files or shards), DDP under torchrun."""
    from geospot.train.finetune import FinetuneConfig
    from geospot.train.finetune_dist import finetune_distributed

    ft = FinetuneConfig(unfreeze=args.unfreeze, epochs=args.finetune_epochs, loss=args.loss, tau_km=args.tau_km,
                        seed=args.seed, batch_size=args.finetune_batch_size,
                        mask=mask.to_dict() if mask is not None and not mask.is_empty else None,
                        workers=getattr(args, "workers", None) or 2)
    df = st.index.iloc[rows][["path", "lat", "lon"]]
    if ctx.is_main:
        print(f"fine-tuning the last {args.unfreeze} block(s) and the head on {len(df)} images, global batch "
              f"{ft.batch_size}, {ctx.world_size} process(es), BatchNorm statistics frozen", file=sys.stderr)
    coords = model.train_coords
    out = finetune_distributed(model, df, ft, run_dir, ctx=ctx, progress=not args.quiet, val_manifest=val_manifest)
    out.train_coords = coords
    return out
