"""`--unfreeze` fine-tuning with DDP: 2 gloo processes give the one-process weights, and resume across world sizes.

Images are read from generated tar shards (plus one unreadable file, which both runs
must skip alike); the `tiny` encoder's last 2 blocks and an MLP head with dropout are
trained with an odd global batch, so the two ranks get unequal shares.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from geospot.data.manifest import read_manifest
from geospot.data.shards_write import write_shards
from geospot.geo.cells import build_cells
from geospot.testing import make_fixture_dataset
from geospot.train import finetune_dist
from geospot.train.finetune import STATE_FILE, FinetuneConfig
from geospot.train.finetune_dist import finetune_distributed

CONFIG = dict(unfreeze=2, epochs=2, batch_size=5, lr_head=5e-3, lr_encoder=1e-3, class_weighting="inv_sqrt",
              workers=1, seed=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(root: Path) -> pd.DataFrame:
    m = read_manifest(root / "shards" / "dataset.shards.json")
    df = m.df[["path", "lat", "lon"]].copy()
    bad = pd.DataFrame({"path": [str(root / "broken.jpg")], "lat": [10.0], "lon": [20.0]})
    return pd.concat([df.iloc[:5], bad, df.iloc[5:]], ignore_index=True)


def _model(df: pd.DataFrame):
    from geospot.encoders import create_encoder
    from geospot.models.checkpoint import GeoModel
    from geospot.models.head import GeoCellHead

    cells = build_cells(df["lat"].to_numpy(), df["lon"].to_numpy(), scheme="grid", cell_km=2000.0)
    enc = create_encoder("tiny", pretrained=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = GeoCellHead(enc.embed_dim, len(cells), hidden=8, dropout=0.2)
    return GeoModel("tiny", enc.preprocess.to_dict(), head, cells, train_config={"normalize": True})


def _weights(model) -> dict[str, torch.Tensor]:
    out = {f"encoder.{k}": v for k, v in model.encoder_state.items()}
    out.update({f"head.{k}": v.detach().clone() for k, v in model.head.state_dict().items()})
    return out


def _worker(rank: int, world: int, port: int, root: str) -> None:
    from geospot.train import dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    root_p = Path(root)
    ctx = dist.init(device="cpu")
    df = _rows(root_p)
    for name in ("fresh", "resumed"):
        out = finetune_distributed(_model(df), df, FinetuneConfig(**CONFIG), root_p / f"run-{name}", ctx=ctx,
                                   progress=False)
        if ctx.is_main:
            save_file(_weights(out), str(root_p / f"ddp-{name}.safetensors"))
            (root_p / f"ddp-{name}.json").write_text(json.dumps(out.metrics["finetune"]))
    dist.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftd")
    m = read_manifest(make_fixture_dataset(root / "ds", n_locations=6, views=2, size=40, seed=2))
    write_shards(m, root / "shards", per_shard=6)
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


def test_two_gloo_processes_equal_one_and_resume_on_two(data, monkeypatch):
    df = _rows(data)
    assert df["path"].str.contains(".tar#").sum() == 12
    single = finetune_distributed(_model(df), df, FinetuneConfig(**CONFIG), data / "run-single", progress=False)
    assert single.metrics["finetune"]["n_skipped_images"] == 1 and single.metrics["finetune"]["world_size"] == 1

    # one process killed after epoch 1 (its state written): the 2-process run resumes it
    real_save = finetune_dist._save_checkpoint

    class Killed(Exception):
        pass

    def save_then_die(run_dir, epoch, *args):
        real_save(run_dir, epoch, *args)
        if epoch == 1:
            raise Killed

    monkeypatch.setattr(finetune_dist, "_save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        finetune_distributed(_model(df), df, FinetuneConfig(**CONFIG), data / "run-resumed", progress=False)
    monkeypatch.undo()
    assert json.loads((data / "run-resumed" / STATE_FILE).read_text())["epoch"] == 1

    # fork: the workers inherit this process's imports (a spawned interpreter spends ~15 s importing
    # on a loaded 2-core machine); safe here, as torch ran single-threaded and no process group exists
    torch.multiprocessing.start_processes(_worker, args=(2, _free_port(), str(data)), nprocs=2, join=True,
                                          start_method="fork")

    ref = _weights(single)
    for name in ("fresh", "resumed"):
        got = load_file(str(data / f"ddp-{name}.safetensors"))
        assert got.keys() == ref.keys()
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], atol=2e-5, rtol=1e-4, msg=lambda m: f"{name} {k}: {m}")
    fresh = json.loads((data / "ddp-fresh.json").read_text())
    assert fresh["world_size"] == 2 and fresh["n_skipped_images"] == 1
    np.testing.assert_allclose([h["train_loss"] for h in fresh["history"]],
                               [h["train_loss"] for h in single.metrics["finetune"]["history"]], rtol=1e-5)
    # the tail trained, BatchNorm statistics stayed frozen, the frozen stem did not move
    start = _model(df)
    from geospot.encoders import create_encoder

    enc0 = create_encoder("tiny", pretrained=False).state_dict()
    assert not torch.equal(ref["encoder._blocks.2.0.weight"], enc0["_blocks.2.0.weight"])
    assert torch.equal(ref["encoder._blocks.2.1.running_mean"], enc0["_blocks.2.1.running_mean"])
    assert torch.equal(ref["encoder.stem.0.weight"], enc0["stem.0.weight"])
    assert not torch.equal(ref["head.out.weight"], start.head.state_dict()["out.weight"])
