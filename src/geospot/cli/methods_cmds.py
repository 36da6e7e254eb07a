"""Options of `geospot train` that switch on the methods of PIGEON and OSV-5M (docs/methods.md):
auxiliary heads, a retrieval refiner, the hybrid head. `locate` and `eval` use what a model stores.

    geospot train data.csv --out m --aux country,driving_side,month --aux-weight 0.2 --hidden 512
    geospot train data.csv --out m --refine prototypes --hybrid
"""
from __future__ import annotations


def register(sub) -> None:
    train = sub.choices.get("train")
    if train is None:
        return
    from geospot.models.aux import AUX_TARGETS

    g = train.add_argument_group("methods (docs/methods.md)")
    g.add_argument("--aux", metavar="NAMES",
                   help="auxiliary heads trained with the geocell head, comma-separated: "
                        f"{', '.join(AUX_TARGETS)} (month needs a date column; climate needs geospot[climate]); "
                        "NAME=W sets one head's loss weight. They change the geocell head only with --hidden > 0")
    g.add_argument("--aux-weight", type=float, default=0.2, metavar="W",
                   help="loss weight of the auxiliary heads on the shared layer (default 0.2; 0: extra "
                        "predictions only, the geocell head stays exactly as without them)")
    g.add_argument("--refine", choices=["prototypes", "knn"],
                   help="store a retrieval refiner in the model: PIGEON's prototypes (clusters of training "
                        "places per cell) or every training image (kNN); answers move to the best match in the top cells")
    g.add_argument("--hybrid", action="store_true",
                   help="also train OSV-5M's hybrid head (per-cell offsets from the centroid); answers use the "
                        "top cell moved by its offset")
    inner = train.get_default("func")
    train.set_defaults(func=lambda args: _train(args, inner))


def _train(args, inner) -> int:
    used = [f"--{name}" for name in ("aux", "refine", "hybrid") if getattr(args, name, None)]
    if used:
        from geospot.train.dist import launched

        if getattr(args, "store", None) or launched():
            raise SystemExit(f"error: {', '.join(used)} train on one process from a manifest; they do not "
                             "combine with --store or torchrun yet")
    return inner(args)


def train_method_options(args) -> dict:
    """The `fit` keywords of these options (empty when none is used); a bad --aux exits with one line."""
    opts: dict = {}
    if getattr(args, "aux", None):
        from geospot.models.aux import parse_aux

        if getattr(args, "aux_weight", 0.2) < 0:
            raise SystemExit(f"error: --aux-weight must be >= 0, got {args.aux_weight}")
        try:
            opts["aux"] = parse_aux(args.aux, args.aux_weight)
        except ValueError as exc:
            raise SystemExit(f"error: --aux: {exc}")
    if getattr(args, "refine", None):
        opts["refine"] = args.refine
    if getattr(args, "hybrid", False):
        opts["hybrid"] = True
    if opts and getattr(args, "unfreeze", 0):
        raise SystemExit("error: --aux, --refine and --hybrid work on the frozen encoder's embeddings; "
                         "they do not combine with --unfreeze")
    return opts


def admin_lines(report: dict) -> list[str]:
    """`geospot eval`'s country / region, district and city accuracy lines (OSV-5M definitions), each with its
    95% bootstrap interval where the report has one."""
    admin = report.get("admin")
    if not admin:
        return []
    h, p = admin["hierarchy"], admin["point"]
    return [f"country / region accuracy (OSV-5M, GeoNames labels): hierarchy {_pct(h, 'country_acc')} / "
            f"{_pct(h, 'region_acc')} (summed cell probabilities, shares from {admin['shares_from']}); "
            f"point {_pct(p, 'country_acc')} / {_pct(p, 'region_acc')}"
            ] + _district_line(h, p) + _city_line(h, p)


def _pct(d: dict, key: str) -> str:
    """``"61.2% [58.7, 63.6]"`` (the interval only when ``key + "_ci"`` is there; NaN prints as n/a)."""
    v = d[key]
    if v != v:
        return "n/a"
    ci = d.get(key + "_ci")
    return f"{100 * v:.1f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def _listed(h: dict, level: str, what: str) -> str:
    if f"{level}_listed" not in h:
        return ""
    there = h[f"{level}_acc_listed"]
    return (f"; answers list {what} for {100 * h[f'{level}_listed']:.0f}% of them"
            + (f", {100 * there:.1f}% right there" if there == there else ""))  # NaN: none listed


def _district_line(h: dict, p: dict) -> list[str]:
    """District (admin-2) accuracy, when the hierarchy has districts (models saved before them have none)."""
    if "district_acc" not in h:
        return []
    if not h["n_district"]:
        return [f"district accuracy (admin-2): none of the {h['n']} test places has a GeoNames district"]
    return [f"district accuracy (admin-2, over the {h['n_district']} of {h['n']} places GeoNames gives one): "
            f"hierarchy {_pct(h, 'district_acc')}{_listed(h, 'district', 'districts')}; "
            f"point {_pct(p, 'district_acc')}"]


def _city_line(h: dict, p: dict) -> list[str]:
    """City accuracy (OSV-5M: the nearest GeoNames place): the hierarchy's when it has city shares (from
    training places), and the point's."""
    hier = (f"hierarchy {_pct(h, 'city_acc')}{_listed(h, 'city', 'a city')}; " if "city_acc" in h
            else "hierarchy n/a (no training places for city shares); ")
    return [f"city accuracy (OSV-5M, the nearest GeoNames place): {hier}point {_pct(p, 'city_acc')}"]
