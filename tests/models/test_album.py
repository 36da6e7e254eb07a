"""The album model: shapes and masking of variable-length albums, NumPy = torch, storage, time order, trips."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geospot.albums import album_order
from geospot.models.album import (AlbumError, average_probs, check_inputs, load_album, pad_albums, pair_biases,
                                  time_features)
from geospot.models.album_net import AlbumNet
from geospot.train.album import AlbumConfig, TripMaker, album_batch, fit_album

D, C = 8, 5
_W = np.random.default_rng(42).normal(size=(C, D)).astype(np.float32)


class _Base:
    """A fixed linear head (rows normalised to norm sqrt(D), as geospot's heads): NumPy and torch."""

    def predict_proba(self, e):
        x = e / np.linalg.norm(e, axis=-1, keepdims=True) * np.sqrt(D)
        z = x @ _W.T
        z = np.exp(z - z.max(-1, keepdims=True))
        return (z / z.sum(-1, keepdims=True)).astype(np.float32)

    @staticmethod
    def torch(e):
        x = torch.nn.functional.normalize(e, dim=-1) * np.sqrt(D)
        return torch.softmax(x @ torch.from_numpy(_W).T, -1)


BASE = _Base()


def _net(seed=0, correction=True):
    torch.manual_seed(seed)
    net = AlbumNet(D, C, d_model=8, n_layers=2, n_heads=2, ff=16, dropout=0.0, correction=correction,
                   embedding_input=True)
    with torch.no_grad():  # leave the zero init: every path must carry signal
        net.out.weight.normal_(0, 0.3)
        net.gate.weight.normal_(0, 0.3)
        net.pool_sim_slope.fill_(1.0)
        for b in net.layers:
            b.time_slope.normal_(0, 1)
            b.sim_slope.normal_(0, 1)
    return net.eval()


def _album(rng, n):
    emb = rng.normal(size=(n, D)).astype(np.float32)
    p = rng.dirichlet(np.ones(C), size=n).astype(np.float32)
    hours = np.sort(rng.uniform(0, 30, n))
    return emb, p, hours


def _torch_probs(net, emb, probs, hours, mask):
    from geospot.models.album import photo_features

    dt, st = pair_biases(hours, mask)
    feats = photo_features(hours, mask, probs)
    args = [torch.from_numpy(np.asarray(x, np.float32)) for x in (emb, probs, feats, dt, st)]
    with torch.no_grad():
        z = net(*args, torch.from_numpy(mask), _Base.torch)
    return (torch.softmax(z, -1) * torch.from_numpy(mask)[..., None]).numpy()


def test_variable_length_albums_are_masked_and_numpy_matches_torch():
    rng = np.random.default_rng(0)
    albums = [_album(rng, n) for n in (1, 3, 6)]
    emb, mask = pad_albums([a[0] for a in albums])
    probs, _ = pad_albums([a[1] for a in albums])
    hours, _ = pad_albums([a[2] for a in albums], fill=np.nan)
    net = _net()
    out = net.to_numpy().predict_proba(emb, probs, hours, mask, base=BASE)
    assert out.shape == (3, 6, C)
    np.testing.assert_allclose(out[mask].sum(-1), 1.0, rtol=1e-5)
    assert (out[~mask] == 0).all()
    np.testing.assert_allclose(out, _torch_probs(net, emb, probs, hours, mask), atol=2e-5)
    # padding carries no information: garbage there changes nothing, and each album alone answers the same
    emb2, probs2 = emb.copy(), probs.copy()
    emb2[~mask], probs2[~mask] = 7.0, 0.2
    np.testing.assert_allclose(net.to_numpy().predict_proba(emb2, probs2, hours, mask, base=BASE), out, atol=1e-6)
    for i, (e, p, h) in enumerate(albums):
        alone = net.to_numpy().predict_proba(e[None], p[None], h[None], base=BASE)
        np.testing.assert_allclose(alone[0], out[i, :len(e)], atol=1e-5)


def test_an_album_of_one_photo_gets_the_single_photo_answer():
    rng = np.random.default_rng(1)
    emb, _, hours = _album(rng, 1)
    p = BASE.predict_proba(emb)
    np.testing.assert_allclose(average_probs(p[None], np.ones((1, 1), bool))[0], p, rtol=1e-6)
    # no neighbours; the fused embedding is the photo's own: without the correction, the base answer
    net = _net(correction=False)
    with torch.no_grad():
        net.out.weight.zero_()
    np.testing.assert_allclose(net.to_numpy().predict_proba(emb[None], p[None], hours[None], base=BASE)[0], p,
                               atol=1e-5)


def test_average_gives_every_photo_the_album_mean():
    p = np.array([[[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0], [0.2] * 5]], np.float32)
    mask = np.array([[True, True, False]])
    out = average_probs(p, mask)
    np.testing.assert_allclose(out[0, 0], [0.5, 0.5, 0, 0, 0])
    np.testing.assert_allclose(out[0, 1], out[0, 0])
    assert (out[0, 2] == 0).all()


def test_save_load_round_trip_and_damaged_files(tmp_path):
    rng = np.random.default_rng(2)
    emb, p, hours = _album(rng, 4)
    net = _net()
    assert load_album(tmp_path) is None  # a model without an album model
    net.save(tmp_path, "abc", {"note": "test"})
    loaded = load_album(tmp_path, "abc", C, D)
    np.testing.assert_allclose(loaded.predict_proba(emb[None], p[None], hours[None], base=BASE),
                               net.to_numpy().predict_proba(emb[None], p[None], hours[None], base=BASE), atol=1e-7)
    with pytest.raises(AlbumError, match="other cells"):
        load_album(tmp_path, "xyz")
    with pytest.raises(AlbumError, match="num_cells"):
        load_album(tmp_path, "abc", C + 1)
    (tmp_path / "album.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(AlbumError, match="album.safetensors"):
        load_album(tmp_path, "abc")
    (tmp_path / "album.json").write_text('{"format": "something else"}')
    with pytest.raises(AlbumError, match="not a geospot album model"):
        load_album(tmp_path)


def test_bad_inputs_get_one_clear_line():
    with pytest.raises(AlbumError, match=r"emb must be \[1, 2, 8\]"):
        check_inputs(np.zeros((1, 2, 3)), np.zeros((1, 2, C)), None, np.ones((1, 2), bool), D, C)
    with pytest.raises(AlbumError, match="the base model's cells"):
        check_inputs(np.zeros((1, 2, D)), np.zeros((1, 2, C + 1)), None, np.ones((1, 2), bool), D, C)
    with pytest.raises(AlbumError, match="hours must be"):
        check_inputs(np.zeros((1, 2, D)), np.zeros((1, 2, C)), np.zeros((1, 3)), np.ones((1, 2), bool), D, C)
    with pytest.raises(AlbumError, match="no albums"):
        pad_albums([])


def test_time_features_and_order():
    hours = np.array([[0.0, 1.0, np.nan, 25.0, 0.0]])
    mask = np.array([[True, True, True, True, False]])
    f = time_features(hours, mask)
    assert list(f[0, :, 0]) == [1, 1, 0, 1, 0]  # has_time
    np.testing.assert_allclose(f[0, [1, 3], 1], np.log1p([1.0, 24.0]))  # gap to the previous timed photo
    np.testing.assert_allclose(f[0, [0, 1], 2], np.log1p([1.0, 24.0]))  # gap to the next
    dt, steps = pair_biases(hours, mask)
    assert dt[0, 0, 2] == 0 and dt[0, 0, 3] == pytest.approx(np.log1p(25.0))  # unknown time: no time bias
    assert steps[0, 0, 3] == pytest.approx(np.log1p(3))
    # photos are answered in time order; untimed ones follow in input order
    assert list(album_order([5.0, np.nan, 1.0, np.nan, 3.0])) == [2, 4, 0, 1, 3]
    # the time gaps matter to the model
    rng = np.random.default_rng(3)
    emb, p, h = _album(rng, 4)
    m = _net().to_numpy()
    assert not np.allclose(m.predict_proba(emb[None], p[None], h[None], base=BASE),
                           m.predict_proba(emb[None], p[None], (h * 50)[None], base=BASE), atol=1e-4)


def test_trips_hop_between_nearby_places_across_the_antimeridian():
    from geospot.geo.distance import haversine_km

    lat = np.array([0.0, 0.0, 0.5, 40.0, 40.0])
    lon = np.array([179.9, -179.9, -179.5, 10.0, 10.1])
    groups = np.array(["a", "b", "c", "d", "e"])
    maker = TripMaker(np.repeat(lat, 2), np.repeat(lon, 2), np.repeat(groups, 2), hop_km=100, p_untimed=0.0)
    trips = maker.make(50, np.random.default_rng(0))
    assert len(trips) == 50
    for rows, hours in trips:
        assert len(rows) >= 2 and np.all(np.diff(hours) >= 0)
        places = {g for g in np.repeat(groups, 2)[rows]}
        assert places <= {"a", "b", "c"} or places <= {"d", "e"}  # never a hop of thousands of km
        la, lo = np.repeat(lat, 2)[rows], np.repeat(lon, 2)[rows]
        assert haversine_km(la[:-1], lo[:-1], la[1:], lo[1:]).max() <= 100
    assert any({"a", "b"} <= set(np.repeat(groups, 2)[r]) for r, _ in trips)  # 22 km apart over the antimeridian


def test_fit_album_learns_whom_to_trust():
    """Half the photos are confidently wrong, and their embedding says so; in trips with photos that know,
    training must beat the untrained model (which mixes half and half)."""
    from geospot.geo.cells import build_cells

    rng = np.random.default_rng(4)
    centres = np.array([[10.0, 10.0], [-20.0, 100.0], [45.0, -60.0]])
    place = np.repeat(np.arange(60), 2)
    region = place % 3
    lat = centres[region, 0] + rng.normal(0, 0.3, place.size)
    lon = centres[region, 1] + rng.normal(0, 0.3, place.size)
    cells = build_cells(lat, lon, scheme="grid", cell_km=500.0)
    truth = cells.assign(lat, lon)
    informed = rng.random(place.size) < 0.5
    wrong = (truth + 1 + rng.integers(0, len(cells) - 1, place.size)) % len(cells)
    probs = np.full((place.size, len(cells)), 0.02 / len(cells), np.float32)
    probs[np.arange(place.size), np.where(informed, truth, wrong)] += 0.98
    emb = rng.normal(size=(place.size, D)).astype(np.float32)
    emb[:, 0] = np.where(informed, 3.0, -3.0)
    cfg = AlbumConfig(d_model=8, n_heads=2, ff=16, epochs=8, trips_per_epoch=128, hop_km=200, lr=1e-2, seed=0,
                      embedding_input=True)
    uniform = lambda e: torch.full((len(e), len(cells)), 1.0 / len(cells))  # noqa: E731  (a base that knows nothing)
    folds = [np.flatnonzero(place % 2 == k) for k in (0, 1)]
    net, summary = fit_album(emb, probs, lat, lon, place, cells, folds, [uniform, uniform], cfg)
    assert summary["loss_history"][-1] < summary["loss_history"][0]
    trips = TripMaker(lat, lon, place, 200, p_untimed=0).make(100, np.random.default_rng(9))
    rows = np.concatenate([r for r, _ in trips])
    batch = album_batch(trips, emb, probs)

    def accuracy(model):
        with torch.no_grad():
            out = model(*batch, uniform).argmax(-1).numpy()
        return (out[batch[-1].numpy()] == truth[rows]).mean()

    torch.manual_seed(0)
    untrained = AlbumNet(D, len(cells), 8, 1, 2, 16, 0.0, embedding_input=True).eval()
    assert accuracy(net) > accuracy(untrained) + 0.05
