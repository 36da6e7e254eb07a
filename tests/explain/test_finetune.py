"""End-to-end fine-tuning: frozen parts stay frozen, augmentation defaults, crash-resume equality."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from geospot.data.manifest import read_manifest
from geospot.geo.cells import build_cells
from geospot.models.checkpoint import GeoModel
from geospot.testing import make_fixture_dataset
from geospot.train.finetune import STATE_FILE, FinetuneConfig, augment, finetune


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    return read_manifest(make_fixture_dataset(root, n_locations=10, views=2, size=72, seed=3))


@pytest.fixture()
def model(small, make_tiny_model):
    # dropout > 0: resuming must also restore the torch RNG state
    return make_tiny_model(build_cells(small.lat, small.lon, scheme="grid", cell_km=2000.0), dropout=0.2)


def quick(**kw) -> FinetuneConfig:
    base = dict(unfreeze=2, epochs=3, batch_size=8, lr_head=5e-3, lr_encoder=1e-3, device="cpu")
    base.update(kw)
    return FinetuneConfig(**base)


class Crash(RuntimeError):
    pass


def assert_same_weights(a: GeoModel, b: GeoModel) -> None:
    for sa, sb in ((a.encoder_state, b.encoder_state), (a.head.state_dict(), b.head.state_dict())):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


def test_resume_after_a_crash_gives_the_same_weights(small, model, tmp_path):
    reference = finetune(model, small, quick(), tmp_path / "a", progress=False)

    def crash_after_first(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise Crash("killed")

    with pytest.raises(Crash):
        finetune(model, small, quick(), tmp_path / "b", progress=False, on_epoch_end=crash_after_first)
    state = json.loads((tmp_path / "b" / STATE_FILE).read_text())
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert not list((tmp_path / "b").glob("*.pkl")) and not list((tmp_path / "b").glob("*.pt"))

    epochs_run = []
    resumed = finetune(model, small, quick(), tmp_path / "b", progress=False,
                       on_epoch_end=lambda e, r: epochs_run.append(e))
    assert epochs_run == [2, 3]  # continued, did not start over
    assert_same_weights(resumed, reference)
    assert [h["train_loss"] for h in resumed.metrics["finetune"]["history"]] == \
        [h["train_loss"] for h in reference.metrics["finetune"]["history"]]

    # a finished run returns the same model without training again
    again = finetune(model, small, quick(), tmp_path / "b", progress=False, on_epoch_end=lambda e, r: epochs_run.append(e))
    assert epochs_run == [2, 3]
    assert_same_weights(again, reference)


def test_a_run_dir_of_another_config_is_refused(small, model, tmp_path):
    with pytest.raises(Crash):
        finetune(model, small, quick(), tmp_path, progress=False, on_epoch_end=lambda e, r: (_ for _ in ()).throw(Crash()))
    with pytest.raises(ValueError, match="different model, data or config"):
        finetune(model, small, quick(lr_head=1e-2), tmp_path, progress=False)


def test_only_the_last_blocks_train_and_the_result_is_a_savable_model(small, model, tmp_path):
    from geospot.encoders import create_encoder

    original = create_encoder("tiny", pretrained=False).state_dict()
    out = finetune(model, small, quick(unfreeze=1, epochs=1), tmp_path / "run", val_manifest=small, progress=False)
    state = out.encoder_state
    frozen = [k for k in original if not k.startswith("_blocks.2.")]
    assert frozen and all(torch.equal(state[k], original[k]) for k in frozen)  # incl. BatchNorm running stats
    assert not torch.equal(state["_blocks.2.0.weight"], original["_blocks.2.0.weight"])
    assert not torch.equal(state["_blocks.2.1.running_mean"], original["_blocks.2.1.running_mean"])
    assert not torch.equal(out.head.out.weight, model.head.out.weight)
    assert model.encoder_state is None  # the input model is untouched
    assert out.train_config["finetune"]["unfreeze"] == 1
    assert "geoscore" in out.metrics["finetune"]["val"]
    loaded = GeoModel.load(out.save(tmp_path / "model"))
    assert_same_weights(loaded, out)


def test_bad_images_are_skipped_and_reported(small, model, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    df = small.df.copy()
    df.loc[0, "path"] = str(bad)
    df[["path", "lat", "lon", "location_id"]].to_csv(tmp_path / "m.csv", index=False)
    manifest = read_manifest(tmp_path / "m.csv", check_files=False)
    out = finetune(model, manifest, quick(epochs=2), tmp_path / "run", progress=False)
    err = capsys.readouterr().err
    assert err.count("broken.jpg") == 1  # reported once, not once per epoch
    assert out.metrics["finetune"]["n_skipped_images"] == 1
    assert out.metrics["finetune"]["history"][-1]["n_train"] == len(small) - 1


def test_too_many_blocks_is_a_clear_error(small, model, tmp_path):
    with pytest.raises(ValueError, match="has 3 blocks; cannot unfreeze 4"):
        finetune(model, small, quick(unfreeze=4), tmp_path, progress=False)


def test_hflip_is_off_by_default_and_augmentation_is_seeded():
    assert FinetuneConfig().hflip is False
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    arr[:, :24] = 0  # left half dark: a flip is visible
    img = Image.fromarray(arr)
    plain = FinetuneConfig(crop_scale=(1.0, 1.0), jitter=0.0)
    flips = FinetuneConfig(crop_scale=(1.0, 1.0), jitter=0.0, hflip=True)
    unflipped = [np.asarray(augment(img, 48, np.random.default_rng(s), plain)) for s in range(20)]
    assert all(np.array_equal(u, arr) for u in unflipped)
    flipped = [np.asarray(augment(img, 48, np.random.default_rng(s), flips)) for s in range(20)]
    assert any(np.array_equal(f, arr[:, ::-1]) for f in flipped)
    cfg = FinetuneConfig()
    a = augment(img, 32, np.random.default_rng([1, 2, 3]), cfg)
    b = augment(img, 32, np.random.default_rng([1, 2, 3]), cfg)
    assert a.size == (32, 32) and np.array_equal(np.asarray(a), np.asarray(b))


def test_config_validation_and_round_trip():
    cfg = FinetuneConfig(unfreeze=3, mask={"boxes": [[0.75, 0.75, 1.0, 1.0]], "fill": [124, 116, 104]})
    assert FinetuneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for bad in (dict(unfreeze=-1), dict(epochs=0), dict(loss="mse"), dict(crop_scale=(0.0, 1.0)),
                dict(jitter=1.5), dict(tau_km=0.0), dict(mask="br:0.25x0.25")):
        with pytest.raises(ValueError):
            FinetuneConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        FinetuneConfig.from_dict({"epochz": 3})
