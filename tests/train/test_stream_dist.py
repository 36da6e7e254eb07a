"""Streamed head training: equals `train_head` on one process, and 2 gloo processes (DDP) equal 1.

The distributed half starts 2 real processes with `torch.multiprocessing.spawn`
on 127.0.0.1 (a free port), each training on its share of every global batch
from a memory-mapped float16 array, and compares rank 0's weights with the
single-process run. Also: a run interrupted after epoch 1 on one process
resumes on two and ends where an uninterrupted run ends.
"""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from geospot.geo.cells import CellTable, build_cells
from geospot.train import stream
from geospot.train.config import TrainConfig
from geospot.train.fit import train_head
from geospot.train.stream import train_head_streaming

# Odd global batch (37) so the two ranks get unequal shares; MLP + dropout + class weights + validation.
CONFIGS = {
    "mlp_dropout_weighted_val": dict(epochs=3, batch_size=37, hidden=16, dropout=0.2, class_weighting="inv_sqrt",
                                     val_fraction=0.2, patience=10, lr=3e-3),
    "linear_ce": dict(epochs=2, batch_size=64, loss="ce", dropout=0.1),
}
RESUME = dict(epochs=3, batch_size=50, dropout=0.1)


def _data(root):
    rng = np.random.default_rng(0)
    n, d = 260, 16
    lat, lon = rng.uniform(-70, 70, n), rng.uniform(-180, 180, n)
    emb = rng.normal(size=(n, d)) + np.c_[lat / 20, lon / 40, np.zeros((n, d - 2))]
    np.save(root / "emb.npy", emb.astype(np.float16))
    np.save(root / "coords.npy", np.c_[lat, lon])
    groups = np.array([f"g{i // 2}" for i in range(n)])
    np.save(root / "groups.npy", groups)
    build_cells(lat, lon, scheme="s2", min_per_cell=5, max_per_cell=40).save(root / "cells")


def _load(root):
    emb = np.load(root / "emb.npy", mmap_mode="r")
    c = np.load(root / "coords.npy")
    return emb, c[:, 0], c[:, 1], np.load(root / "groups.npy"), CellTable.load(root / "cells")


def _worker(rank: int, world: int, port: int, root: str) -> None:
    from pathlib import Path

    from geospot.train import dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    root = Path(root)
    ctx = dist.init(device="cpu")
    emb, lat, lon, groups, cells = _load(root)
    rows = np.arange(10, len(lat))  # a subset of rows, as a store's ok/split filter gives
    for name, cfg in CONFIGS.items():
        head, hist = train_head_streaming(emb, lat, lon, cells, TrainConfig(**cfg), groups=groups, rows=rows,
                                          ctx=ctx, progress=False)
        if ctx.is_main:
            save_file(head.state_dict(), str(root / f"ddp-{name}.safetensors"))
            (root / f"ddp-{name}.json").write_text(json.dumps(hist))
    head, hist = train_head_streaming(emb, lat, lon, cells, TrainConfig(**RESUME), ctx=ctx,
                                      state_dir=root / "state", progress=False)
    if ctx.is_main:
        save_file(head.state_dict(), str(root / "ddp-resumed.safetensors"))
        (root / "ddp-resumed.json").write_text(json.dumps(hist))
    dist.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_same(a: dict, b: dict, atol: float = 2e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-4, msg=lambda m: f"{k}: {m}")


def test_streamed_equals_in_memory_training(tmp_path):
    _data(tmp_path)
    emb, lat, lon, groups, cells = _load(tmp_path)
    for cfg in (TrainConfig(epochs=3, dropout=0.0, val_fraction=0.2, patience=1),
                TrainConfig(epochs=2, dropout=0.0, loss="ce", class_weighting="inv_sqrt", hidden=8)):
        ref, ref_hist = train_head(np.asarray(emb, np.float32), lat, lon, cells, cfg, groups=groups, progress=False)
        got, hist = train_head_streaming(emb, lat, lon, cells, cfg, groups=groups, progress=False)
        _assert_same(ref.state_dict(), got.state_dict(), atol=1e-6)
        assert hist["best_epoch"] == ref_hist["best_epoch"] and hist["epochs_run"] == ref_hist["epochs_run"]
        np.testing.assert_allclose(hist["train_loss"], ref_hist["train_loss"], rtol=1e-6)


def test_streamed_with_a_validation_set_of_its_own_equals_in_memory(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only add contention on a loaded machine
    try:
        _check_validation_set(tmp_path)
    finally:
        torch.set_num_threads(before)


def _check_validation_set(tmp_path):
    _data(tmp_path)
    emb, lat, lon, groups, cells = _load(tmp_path)
    cfg = TrainConfig(epochs=4, dropout=0.0, patience=2, val_fraction=0.3)  # val_fraction unused with a set
    v = np.arange(0, 60)
    ref, ref_hist = train_head(np.asarray(emb[60:], np.float32), lat[60:], lon[60:], cells, cfg, groups=groups[60:],
                               emb_val=np.asarray(emb[v], np.float32), lat_val=lat[v], lon_val=lon[v], progress=False)
    got, hist = train_head_streaming(emb, lat, lon, cells, cfg, groups=groups, rows=np.arange(60, len(lat)),
                                     val=(emb, lat, lon, v), progress=False)
    _assert_same(ref.state_dict(), got.state_dict(), atol=1e-6)
    assert hist["validation"] == ref_hist["validation"] == "given" and hist["n_val"] == 60
    assert hist["n_train"] == len(lat) - 60 and hist["best_epoch"] == ref_hist["best_epoch"]
    np.testing.assert_allclose(hist["val_geoscore"], ref_hist["val_geoscore"], rtol=1e-5)


def test_two_gloo_processes_equal_one_and_resume_across_world_sizes(tmp_path, monkeypatch):
    _data(tmp_path)
    emb, lat, lon, groups, cells = _load(tmp_path)
    rows = np.arange(10, len(lat))
    single = {}
    for name, cfg in CONFIGS.items():
        head, hist = train_head_streaming(emb, lat, lon, cells, TrainConfig(**cfg), groups=groups, rows=rows,
                                          progress=False)
        single[name] = (head.state_dict(), hist)
    full, _ = train_head_streaming(emb, lat, lon, cells, TrainConfig(**RESUME), progress=False)

    # one process, killed after epoch 1 (its state saved): the 2-process run below resumes it
    real_save = stream._save_state

    class Killed(Exception):
        pass

    def save_then_die(*args):
        real_save(*args)
        if args[6]["epoch"] == 1:
            raise Killed

    monkeypatch.setattr(stream, "_save_state", save_then_die)
    with pytest.raises(Killed):
        train_head_streaming(emb, lat, lon, cells, TrainConfig(**RESUME), state_dir=tmp_path / "state",
                             progress=False)
    monkeypatch.undo()

    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)

    for name in CONFIGS:
        ref_state, ref_hist = single[name]
        _assert_same(ref_state, load_file(str(tmp_path / f"ddp-{name}.safetensors")))
        hist = json.loads((tmp_path / f"ddp-{name}.json").read_text())
        assert hist["world_size"] == 2 and ref_hist["world_size"] == 1
        assert hist["best_epoch"] == ref_hist["best_epoch"]
        np.testing.assert_allclose(hist["train_loss"], ref_hist["train_loss"], rtol=1e-5)
        np.testing.assert_allclose(hist["val_geoscore"], ref_hist["val_geoscore"], rtol=1e-5)
    resumed = json.loads((tmp_path / "ddp-resumed.json").read_text())
    assert resumed["resumed_from_epoch"] == 1 and resumed["epochs_run"] == 3
    _assert_same(full.state_dict(), load_file(str(tmp_path / "ddp-resumed.safetensors")))
    # and back: one process finds the finished state and returns the same weights
    again, hist = train_head_streaming(emb, lat, lon, cells, TrainConfig(**RESUME), state_dir=tmp_path / "state",
                                       progress=False)
    assert hist["resumed_from_epoch"] == 3
    _assert_same(full.state_dict(), again.state_dict())


def test_rerun_of_an_early_stopped_run_trains_no_further(tmp_path):
    _data(tmp_path)
    emb, lat, lon, groups, cells = _load(tmp_path)
    cfg = TrainConfig(epochs=6, val_fraction=0.3, patience=1, lr=0.05, batch_size=32)
    first, hist = train_head_streaming(emb, lat, lon, cells, cfg, groups=groups, state_dir=tmp_path / "s",
                                       progress=False)
    assert hist["stopped_early"], "needs a configuration that stops early"
    again, hist2 = train_head_streaming(emb, lat, lon, cells, cfg, groups=groups, state_dir=tmp_path / "s",
                                        progress=False)
    assert hist2["epochs_run"] == hist["epochs_run"] and hist2["best_epoch"] == hist["best_epoch"]
    _assert_same(first.state_dict(), again.state_dict(), atol=0)
