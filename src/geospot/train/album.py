"""Training the album model on synthetic trips built from single, geotagged photos.

Nobody ships albums with a position per photo, so trips are made from the
training places: a random walk from a random place to unvisited places within
``hop_km`` (great-circle), a few views of each place; capture times are
simulated (minutes between photos of one place, the travel time at 30-90
km/h plus a stop between places) and dropped for a share of the trips, so the
model also works on albums without times. Trips of one place with several
views are albums too (the same-place case).

The base head is frozen. The album model must learn how much to trust the
base probabilities of photos it has *not* seen in training, so it is trained
on out-of-fold probabilities: ``oof_folds`` heads, each trained without a fold
of places on the model's own cells, predict that fold (stacking).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from geospot.train.config import DEFAULT_TAU_KM


@dataclass
class AlbumConfig:
    d_model: int = 64
    n_layers: int = 1
    n_heads: int = 4
    ff: int = 128
    dropout: float = 0.1
    correction: bool = False  # a free per-cell logit correction (measured worse: see docs/methods.md)
    embedding_input: bool = False  # the photo's own embedding as an input (measured worse: memorises)
    epochs: int = 15
    trips_per_epoch: int = 0  # 0: one per training place (at least 500)
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    tau_km: float = DEFAULT_TAU_KM
    hop_km: float = 300.0
    max_places: int = 6
    max_views: int = 3
    max_photos: int = 16
    p_untimed: float = 0.25
    oof_folds: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "ff", "epochs", "batch_size", "max_places", "max_views",
                     "max_photos", "oof_folds"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"AlbumConfig.{name} must be a positive integer, got {v!r}")
        if self.oof_folds < 2:
            raise ValueError(f"AlbumConfig.oof_folds must be at least 2, got {self.oof_folds}")
        for name in ("lr", "tau_km", "hop_km"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 0):
                raise ValueError(f"AlbumConfig.{name} must be a positive number, got {getattr(self, name)!r}")
        if not 0 <= self.p_untimed <= 1 or not 0 <= self.dropout < 1:
            raise ValueError("AlbumConfig.p_untimed must be in [0, 1] and dropout in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


class TripMaker:
    """Random trips over places: ``make(n, rng) -> [(row indices in time order, hours)]``."""

    def __init__(self, lat, lon, groups, hop_km: float = 300.0, max_places: int = 6, max_views: int = 3,
                 max_photos: int = 16, p_untimed: float = 0.25) -> None:
        from scipy.spatial import cKDTree

        from geospot.geo.distance import EARTH_RADIUS_KM, latlon_to_xyz

        codes, uniq = _factorize(groups)
        self.rows = [np.flatnonzero(codes == g) for g in range(len(uniq))]  # photos of each place
        self.lat = np.array([np.asarray(lat, float)[r[0]] for r in self.rows])
        self.lon = np.array([np.asarray(lon, float)[r[0]] for r in self.rows])
        xyz = latlon_to_xyz(self.lat, self.lon)
        chord = 2.0 * math.sin(min(hop_km / EARTH_RADIUS_KM, math.pi) / 2.0)  # great-circle radius as a chord
        self.neighbours = cKDTree(xyz).query_ball_point(xyz, chord)
        self.max_places, self.max_views, self.max_photos, self.p_untimed = max_places, max_views, max_photos, p_untimed

    def make(self, n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        from geospot.geo.distance import haversine_km

        trips, attempts = [], 0
        while len(trips) < n:
            attempts += 1
            if attempts > 100 * n and not trips:
                raise ValueError("cannot build albums of two or more photos: every place has one photo and no "
                                 "other place within hop_km")
            place = int(rng.integers(len(self.rows)))
            visited, rows, hours, t = {place}, [], [], 0.0
            for step in range(int(rng.integers(1, self.max_places + 1))):
                if step:
                    options = [p for p in self.neighbours[place] if p not in visited]
                    if not options:
                        break
                    nxt = int(options[int(rng.integers(len(options)))])
                    km = float(haversine_km(self.lat[place], self.lon[place], self.lat[nxt], self.lon[nxt]))
                    t += km / rng.uniform(30, 90) + rng.uniform(0.2, 3.0)
                    place = nxt
                    visited.add(place)
                views = self.rows[place]
                k = int(rng.integers(1, min(self.max_views, len(views)) + 1))
                for r in rng.choice(views, size=k, replace=False):
                    rows.append(int(r))
                    hours.append(t)
                    t += rng.uniform(0.02, 0.3)
            if len(rows) < 2:
                continue  # an album has at least two photos
            rows, hours = np.array(rows[:self.max_photos]), np.array(hours[:self.max_photos])
            if rng.random() < self.p_untimed:
                hours = np.full(len(rows), np.nan)
            trips.append((rows, hours))
        return trips


def _factorize(groups) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    codes, uniq = pd.factorize(pd.Series(np.asarray(groups, dtype=object)), sort=False)
    if (codes < 0).any():
        raise ValueError(f"row {int(np.flatnonzero(codes < 0)[0])} has no place id (location_id)")
    return codes, np.asarray(uniq)


def base_probs(head, emb, normalize: bool = True) -> np.ndarray:
    """Cell probabilities ``[N, C]`` float32 of a trained head, normalised exactly as in training and in
    `geospot locate` (`normalize_embeddings`: rows to norm sqrt(D)). (`workflows.training.head_probs`
    feeds unit-norm rows to heads trained on sqrt(D)-norm rows, which flattens its probabilities.)"""
    import torch

    from geospot.models.head import normalize_embeddings

    x = torch.from_numpy(np.ascontiguousarray(emb, np.float32))
    head.eval()
    out = np.empty((len(x), head.num_cells), np.float32)
    with torch.no_grad():
        for s in range(0, len(x), 8192):
            chunk = normalize_embeddings(x[s:s + 8192]) if normalize else x[s:s + 8192]
            out[s:s + 8192] = torch.softmax(head(chunk), dim=1).numpy()
    return out


def torch_base(head, normalize: bool = True):
    """A frozen head as the album model's ``base``: ``[N, D]`` torch embeddings -> ``[N, C]`` probabilities,
    differentiable in the embeddings (the album model learns where to look through it)."""
    import torch

    from geospot.models.head import normalize_embeddings

    head.eval()
    for p in head.parameters():
        p.requires_grad_(False)
    return lambda e: torch.softmax(head(normalize_embeddings(e) if normalize else e), dim=-1)


def oof_heads(emb, lat, lon, groups, cells, config=None, n_folds: int = 3, seed: int = 0):
    """``(probs [N, C], folds [(rows)], heads)``: out-of-fold base probabilities on the model's cells, each fold
    of places predicted by a head trained without it (group K-fold by place), and those heads."""
    from geospot.data.splits import group_kfold
    from geospot.train.config import TrainConfig
    from geospot.train.fit import train_head

    config = config or TrainConfig()
    out = np.zeros((len(lat), len(cells)), np.float32)
    folds, heads = [], []
    for tr, te in group_kfold(np.asarray(groups), n_splits=n_folds, seed=seed):
        head, _ = train_head(emb[tr], np.asarray(lat)[tr], np.asarray(lon)[tr], cells, config,
                             groups=np.asarray(groups)[tr], progress=False)
        out[te] = base_probs(head, emb[te], config.normalize)
        folds.append(te)
        heads.append(head)
    return out, folds, heads


def album_batch(trips, emb, probs, lat=None, lon=None):
    """Padded torch tensors of a list of trips: (emb, probs, features, dt, steps, mask[, lat, lon])."""
    import torch

    from geospot.models.album import pad_albums, pair_biases, photo_features

    e, mask = pad_albums([emb[r] for r, _ in trips])
    p, _ = pad_albums([probs[r] for r, _ in trips])
    hrs, _ = pad_albums([h for _, h in trips], fill=np.nan)
    dt, steps = pair_biases(hrs, mask)
    out = [torch.from_numpy(np.asarray(x, np.float32)) for x in (e, p, photo_features(hrs, mask, p), dt, steps)]
    out.append(torch.from_numpy(mask))
    if lat is not None:
        la, _ = pad_albums([np.asarray(lat, float)[r] for r, _ in trips])
        lo, _ = pad_albums([np.asarray(lon, float)[r] for r, _ in trips])
        out += [torch.from_numpy(la), torch.from_numpy(lo)]
    return out


def fit_album(emb, probs, lat, lon, groups, cells, folds, bases, config: AlbumConfig | None = None,
              progress: bool = False):
    """Train an `AlbumNet` on synthetic trips; returns ``(net in eval mode, summary)``.

    ``probs``: the frozen base's out-of-fold probabilities ``[N, C]``; ``folds``: row indices of each fold;
    ``bases``: per fold, the base head that has not seen it (see `torch_base`). Trips stay inside one fold, so
    the fused embeddings of a trip are answered by a head that has seen none of its places."""
    import torch

    from geospot.models.album_net import AlbumNet

    cfg = config or AlbumConfig()
    emb = np.asarray(emb, np.float32)
    probs = np.asarray(probs, np.float32)
    lat, lon, groups = np.asarray(lat, float), np.asarray(lon, float), np.asarray(groups)
    if probs.shape != (len(emb), len(cells)):
        raise ValueError(f"fit_album: probs must be [{len(emb)}, {len(cells)}], got {list(probs.shape)}")
    if len(folds) != len(bases) or not folds:
        raise ValueError(f"fit_album: {len(folds)} folds but {len(bases)} base heads")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    makers = [(np.asarray(rows), TripMaker(lat[rows], lon[rows], groups[rows], cfg.hop_km, cfg.max_places,
                                           cfg.max_views, cfg.max_photos, cfg.p_untimed)) for rows in folds]
    places = sum(len(m.rows) for _, m in makers)
    n_trips = cfg.trips_per_epoch or max(500, places)
    net = AlbumNet(emb.shape[1], len(cells), cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ff, cfg.dropout,
                   cfg.correction, cfg.embedding_input)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = sum(max(1, math.ceil(n_trips * len(m.rows) / places / cfg.batch_size)) for _, m in makers)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    c_lat = torch.as_tensor(np.asarray(cells.centroid_lat, np.float64), dtype=torch.float32)
    c_lon = torch.as_tensor(np.asarray(cells.centroid_lon, np.float64), dtype=torch.float32)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches of a few hundred photos: more threads only spin (measured 10x slower)
    try:
        for epoch in range(cfg.epochs):
            batches = []
            for k, (rows, maker) in enumerate(makers):  # fresh trips every epoch, each inside its fold
                trips = [(rows[r], h) for r, h in maker.make(max(1, round(n_trips * len(maker.rows) / places)), rng)]
                batches += [(k, trips[s:s + cfg.batch_size]) for s in range(0, len(trips), cfg.batch_size)]
            total, count = 0.0, 0
            net.train()
            for i in rng.permutation(len(batches)):
                k, trips = batches[i]
                e, p, f, dt, st, mask, la, lo = album_batch(trips, emb, probs, lat, lon)
                logits = net(e, p, f, dt, st, mask, bases[k])
                loss = _loss(logits[mask], la[mask], lo[mask], c_lat, c_lon, cfg.tau_km)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total, count = total + float(loss.detach()) * len(trips), count + len(trips)
            losses.append(total / max(count, 1))
            if progress:
                print(f"album model: epoch {epoch + 1}/{cfg.epochs} loss {losses[-1]:.4f}", flush=True)
    finally:
        torch.set_num_threads(threads)
    net.eval()
    return net, {"config": cfg.to_dict(), "trips_per_epoch": n_trips, "places": places,
                 "photos": int(len(emb)), "loss_history": [round(x, 5) for x in losses]}


def _loss(logits, lat, lon, c_lat, c_lon, tau_km):
    from geospot.train.losses import haversine_smoothing_targets, soft_cross_entropy

    return soft_cross_entropy(logits, haversine_smoothing_targets(c_lat, c_lon, lat, lon, tau_km))


def train_album_model(model, emb, lat, lon, groups, config: AlbumConfig | None = None, progress: bool = False):
    """Album model for a trained base model (`GeoModel`): out-of-fold base heads with the base's training
    config and cells, then `fit_album`. Returns ``(AlbumNet, summary)``."""
    from geospot.train.config import TrainConfig

    cfg = config or AlbumConfig()
    base_cfg = TrainConfig.from_dict(model.train_config) if model.train_config else TrainConfig()
    emb = np.asarray(emb, np.float32)
    if progress:
        print(f"album model: out-of-fold base heads ({cfg.oof_folds} folds by place)", flush=True)
    probs, folds, heads = oof_heads(emb, lat, lon, groups, model.cells, base_cfg, cfg.oof_folds, cfg.seed)
    bases = [torch_base(h, base_cfg.normalize) for h in heads]
    return fit_album(emb, probs, lat, lon, groups, model.cells, folds, bases, cfg, progress)
