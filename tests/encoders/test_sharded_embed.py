"""Embedding shard by shard over ranks: merged result = one process; a crash loses one shard;
a rerun fills only the gaps; Parquet export; and the real thing under torchrun (2 gloo ranks)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geospot.data.manifest import read_manifest
from geospot.data.shards_write import write_shards
from geospot.encoders.embed import embed_paths
from geospot.encoders.runtime import EncoderRuntime
from geospot.encoders.sharded import embed_sharded, shard_rows
from geospot.encoders.store import EmbeddingStore
from geospot.testing import make_fixture_dataset


class Counting:
    """Counts embedded rows; raises after `fail_after` batches (a crashed rank)."""

    def __init__(self, inner, fail_after=None):
        self.inner, self.fail_after = inner, fail_after
        self.name, self.weights_id, self.embed_dim = inner.name, inner.weights_id, inner.embed_dim
        self.calls = self.rows = 0

    def embed(self, batch):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("rank crashed")
        self.calls += 1
        self.rows += len(batch)
        return self.inner.embed(batch)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("sh")
    m = read_manifest(make_fixture_dataset(root / "ds", n_locations=10, views=2, size=32))
    res = write_shards(m, root / "shards", per_shard=6)  # 4 archives: 6, 6, 6, 2 images
    return res.descriptor


def test_shard_rows():
    class M:
        def __init__(self, df):
            self.df = df

        def __len__(self):
            return len(self.df)

    m = M(pd.DataFrame({"shard": ["b", "b", "a", "a", "c"]}))
    assert [g.tolist() for g in shard_rows(m)] == [[0, 1], [2, 3], [4]]
    assert [g.tolist() for g in shard_rows(M(pd.DataFrame({"x": range(5)})), rows_per_shard=2)] == [[0, 1], [2, 3], [4]]


def test_ranks_merge_to_the_single_process_result_and_reruns_fill_gaps(shards, tmp_path):
    m = read_manifest(shards)
    rt = EncoderRuntime("tiny", backend="onnx")
    ref = embed_paths(m.paths, rt, rt.preprocess, workers=0, progress=False)
    groups = shard_rows(m)
    assert [len(g) for g in groups] == [6, 6, 6, 2]
    cache = tmp_path / "cache"
    kw = dict(cache_dir=cache, world_size=2, workers=0, progress=False)
    # rank 1 of 2 crashes inside its second shard (shard 3): shard 1 is safe in the cache
    crashing = Counting(rt, fail_after=1)
    with pytest.raises(RuntimeError, match="rank crashed"):
        embed_sharded(m, crashing, rt.preprocess, rank=1, **kw)
    # the rerun (one process this time) computes everything but shard 1
    counting = Counting(rt)
    res = embed_sharded(m, counting, rt.preprocess, cache_dir=cache, workers=0, progress=False,
                        store=tmp_path / "store", export=tmp_path / "e.parquet")
    assert counting.rows == len(m) - len(groups[1])
    st = EmbeddingStore.open(tmp_path / "store")
    np.testing.assert_allclose(np.asarray(st.emb, np.float32), ref.embeddings, atol=2e-3, rtol=1e-3)  # float16
    assert np.asarray(st.ok).all() and res.n_ok == len(m) and st.meta["dtype"] == "float16"
    assert st.index["path"].tolist() == m.paths
    df = pd.read_parquet(tmp_path / "e.parquet")
    assert df.columns.tolist() == ["path", "lat", "lon", "ok", "embedding"]
    np.testing.assert_array_equal(np.stack(df["embedding"].to_numpy()), ref.embeddings)
    np.testing.assert_array_equal(df["lat"].to_numpy(), m.lat)
    # two ranks over a complete cache: nothing is embedded again, same merge
    again = Counting(rt)
    embed_sharded(m, again, rt.preprocess, rank=1, **kw)
    res2 = embed_sharded(m, again, rt.preprocess, rank=0, store=tmp_path / "store2", store_dtype="float32", **kw)
    assert again.rows == 0 and res2.n_ok == len(m)
    np.testing.assert_array_equal(np.asarray(EmbeddingStore.open(tmp_path / "store2").emb), ref.embeddings)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _geospot(args, world: int, tmp_path) -> str:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"), OMP_NUM_THREADS="1")
    launcher = [] if world == 1 else ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(world),
                                      "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    cmd = [sys.executable] + (launcher + ["-m", "geospot"] if launcher else ["-m", "geospot"]) + args
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("GEOSPOT_TORCHRUN_TESTS") != "1",
                    reason="starts torchrun 2x (6 Python processes, ~50 s CPU): set GEOSPOT_TORCHRUN_TESTS=1")
def test_torchrun_embed_and_train_equal_one_process(shards, tmp_path):
    """`torchrun --nproc-per-node 2 -m geospot embed|train` against the same verbs in this process."""
    from safetensors.numpy import load_file

    from geospot.cli import main

    common = ["--encoder", "tiny", "--quiet"]
    train = ["--epochs", "3", "--batch-size", "7", "--min-per-cell", "2", "--hidden", "8"]
    out = _geospot(["embed", str(shards), "--store", "s2", "--cache", "c2"] + common, 2, tmp_path)
    assert "embedded 20 of 20 images (32-d, tiny) on 2 process(es)" in out
    out = _geospot(["train", "s2", "--out", "m2"] + train + common, 2, tmp_path)
    assert "2 process(es)" in out
    assert main(["embed", str(shards), "--store", str(tmp_path / "s1"), "--cache", str(tmp_path / "c1")] + common) == 0
    assert main(["train", str(tmp_path / "s1"), "--out", str(tmp_path / "m1")] + train + common) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "s1" / "embeddings.npy"), np.load(tmp_path / "s2" / "embeddings.npy"))
    h1, h2 = load_file(str(tmp_path / "m1" / "head.safetensors")), load_file(str(tmp_path / "m2" / "head.safetensors"))
    for k in h1:
        np.testing.assert_allclose(h1[k], h2[k], atol=2e-5, rtol=1e-4)
    # --unfreeze under torchrun: the fine-tuned encoder and head equal one process's
    ft = train + ["--unfreeze", "1", "--finetune-epochs", "2", "--finetune-batch-size", "7"]
    _geospot(["train", "s2", "--out", "f2"] + ft + common, 2, tmp_path)
    assert main(["train", str(tmp_path / "s1"), "--out", str(tmp_path / "f1")] + ft + common) == 0
    for name in ("head.safetensors", "encoder.safetensors"):
        a, b = load_file(str(tmp_path / "f1" / name)), load_file(str(tmp_path / "f2" / name))
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=2e-5, rtol=1e-4, err_msg=f"{name} {k}")


def test_train_on_a_store_cli(shards, tmp_path, capsys):
    """`geospot train STORE` streams from the store; unsupported combinations say so in one line."""
    from geospot.cli import main

    store = tmp_path / "s"
    assert main(["embed", str(shards), "--encoder", "tiny", "--quiet", "--store", str(store), "--store-dtype",
                 "float32", "--cache", str(tmp_path / "c"), "--export", str(tmp_path / "e.parquet")]) == 0
    assert f"embedded 20 of 20 images (32-d, tiny) on 1 process(es) -> {store}, {tmp_path / 'e.parquet'}" in \
        capsys.readouterr().out
    for extra, msg in ((["--unfreeze", "1", "--finetune-batch-size", "0"], "--workers must be >= 1"),
                       (["--val", str(tmp_path / "missing.csv")], "missing.csv"),
                       (["--split", "nope"], "has no usable rows"), (["--encoder", "efficientnet-lite2"], "holds tiny")):
        assert main(["train", str(store), "--out", str(tmp_path / "m"), "--quiet"] + extra) == 2
        assert msg in capsys.readouterr().err
    assert main(["train", str(store), "--out", str(tmp_path / "m"), "--quiet", "--epochs", "2", "--split", "train",
                 "--min-per-cell", "1"]) == 0
    assert "saved model" in capsys.readouterr().out
    from geospot.workflows.training import load_model

    model = load_model(tmp_path / "m")  # calibrated out-of-fold as `geospot train MANIFEST`, with support points
    assert model.calibration is not None and model.calibration.fitted_on.startswith("group ")
    assert model.calibration.radius_scale and model.support is not None
    assert main(["eval", str(tmp_path / "m"), str(shards), "--quiet", "--cache", str(tmp_path / "c")]) == 0
    # --val MANIFEST: embedded with the store's encoder into m.run/val_embeddings, early stopping on it
    assert main(["train", str(store), "--out", str(tmp_path / "mv"), "--quiet", "--epochs", "3", "--min-per-cell",
                 "1", "--val", str(shards), "--cache", str(tmp_path / "c"), "--no-calibrate"]) == 0
    hist = load_model(tmp_path / "mv").metrics["train"]["history"]
    assert hist["validation"] == "given" and hist["n_val"] == 20 and hist["n_train"] == 20
    # --unfreeze: the head, then the last block fine-tuned on the images in the tar shards
    assert main(["train", str(store), "--out", str(tmp_path / "ft"), "--quiet", "--epochs", "1", "--min-per-cell",
                 "1", "--unfreeze", "1", "--finetune-epochs", "1", "--finetune-batch-size", "8"]) == 0
    assert "fine-tuned 1 block(s)" in capsys.readouterr().out
    ft = load_model(tmp_path / "ft")
    assert ft.encoder_state and ft.metrics["finetune"]["world_size"] == 1
    assert (tmp_path / "ft.run" / "finetune-state.json").is_file()
