"""Zero-shot country/region prompts: probabilities, fusion as a prior, and `locate --model zeroshot:streetclip` end to end."""
from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from clip_vocab import tiny_vocab as _tiny_vocab

from geospot.cli import main
from geospot.encoders.clip import VARIANTS, ClipVisionSpec, random_clip
from geospot.encoders.clip_text import ClipTextEncoder, ClipTextSpec
from geospot.models.zeroshot import Candidates, ZeroShotModel, candidates, fuse_country_prior
from geospot.testing import make_fixture_dataset


def _small_candidates() -> Candidates:
    # countries A (2 regions), B (1 region), C (none)
    return Candidates(ids=["A", "B", "C", "A/1", "A/2", "B/1"], prompts=["p"] * 6,
                      country_code=np.array(["A", "B", "C", "A", "A", "B"], object),
                      lat=np.array([0.0, 10, 20, 1, -1, 11]), lon=np.array([0.0, 10, 20, 1, -1, 11]), n_countries=3,
                      region_country=np.array([0, 0, 1]))


def _unit(rows) -> np.ndarray:
    a = np.asarray(rows, float)
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def test_hierarchical_probabilities():
    prompts = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0.2, 0], [1, -0.5, 0], [0, 1, 0.1]])
    model = ZeroShotModel("x", prompts, logit_scale=np.log(10), cands=_small_candidates(), expand=1)
    p = model.predict_proba(np.array([[1.0, 0.1, 0.0], [0.0, 0.0, 1.0]]))
    assert np.allclose(p.sum(1), 1)
    # row 0: A is the top country and the only one expanded: its mass moves to its regions, B and C stay put
    assert p[0, 0] == 0 and p[0, 3] > p[0, 4] > 0 and p[0, 1] > 0 and p[0, 5] == 0
    s = 10 * (_unit([[1.0, 0.1, 0.0]]) @ prompts.T)[0]
    pa = np.exp(s[0]) / np.exp(s[:3]).sum()
    np.testing.assert_allclose(p[0, 3] + p[0, 4], pa, rtol=1e-6)
    np.testing.assert_allclose(p[0, 3] / p[0, 4], np.exp(s[3] - s[4]), rtol=1e-5)
    # row 1: top country C has no regions, so it keeps its mass; nothing is expanded
    assert p[1, 2] == p[1].max() and np.all(p[1, 3:] == 0)
    codes, pc = model.country_probs(p)
    assert codes == ["A", "B", "C"] and np.allclose(pc.sum(1), 1) and pc[0, 0] == pytest.approx(pa)
    everything = ZeroShotModel("x", prompts, np.log(10), _small_candidates(), expand=None).predict_proba(p[:1, :3])
    assert np.all(everything[:, :2] == 0) and everything[0, 5] > 0


def test_country_prior_fusion():
    head = np.array([[0.5, 0.3, 0.2]])
    fused = fuse_country_prior(head, np.array(["A", "B", "ZZ"]), ["A", "B"], np.array([[0.1, 0.9]]), weight=1.0)
    assert np.allclose(fused.sum(1), 1) and fused[0, 1] > fused[0, 0] > fused[0, 2]
    np.testing.assert_allclose(fuse_country_prior(head, np.array(["A", "B", "ZZ"]), ["A", "B"],
                                                  np.array([[0.1, 0.9]]), weight=0.0), head)


def test_real_candidate_table():
    c = candidates()
    assert c.n_countries > 200 and len(c.ids) > 3000
    fr = c.ids.index("FR")
    assert c.prompts[fr] == "A Street View photo in France." and 42 < c.lat[fr] < 51 and -5 < c.lon[fr] < 8
    regions = [c.prompts[c.n_countries + i] for i in np.flatnonzero(c.region_country == fr)]
    assert "A Street View photo in Ile-de-France, France." in regions


TINY_V = ClipVisionSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        image_size=32, patch_size=8, projection_dim=16)
TINY_T = ClipTextSpec(vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      projection_dim=16, eos_token_id=599)


@pytest.fixture()
def tiny_streetclip(tmp_path, monkeypatch):
    """A full CLIP folder (vision + text + logit_scale + BPE files) of tiny random weights, as 'streetclip'."""
    folder = tmp_path / "streetclip"
    folder.mkdir()
    n_vocab = _tiny_vocab(folder)
    text_spec = replace(TINY_T, vocab_size=n_vocab, eos_token_id=n_vocab - 1)
    torch.manual_seed(0)
    text = ClipTextEncoder(text_spec)
    state = {**random_clip(TINY_V, seed=5).state_dict(), **text.state_dict(), "logit_scale": torch.tensor(4.6)}
    v = asdict(TINY_V)
    projection = v.pop("projection_dim")
    t = asdict(text_spec)
    t.pop("projection_dim")
    (folder / "config.json").write_text(json.dumps({"projection_dim": projection, "vision_config": v, "text_config": t}))
    save_file({k: x.contiguous() for k, x in state.items()}, str(folder / "model.safetensors"))
    monkeypatch.setitem(VARIANTS, "streetclip", replace(VARIANTS["streetclip"], spec=TINY_V))
    # a slice of the real candidate table keeps the test fast (the prompts are encoded by a pure-Python BPE)
    full = candidates()
    keep = np.r_[np.arange(20), full.n_countries + np.flatnonzero(full.region_country < 20)]
    small = Candidates([full.ids[i] for i in keep], [full.prompts[i] for i in keep], full.country_code[keep],
                       full.lat[keep], full.lon[keep], 20, full.region_country[full.region_country < 20])
    monkeypatch.setattr("geospot.models.zeroshot.candidates", lambda: small)
    monkeypatch.setenv("GEOSPOT_WEIGHTS_STREETCLIP", str(folder))
    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_locate_zeroshot_end_to_end(tiny_streetclip, capsys):
    from geospot.encoders import create_encoder
    from geospot.encoders.embed import prepare_image
    from geospot.models.zeroshot import load_zeroshot_model

    manifest = make_fixture_dataset(tiny_streetclip / "data", n_locations=2, views=1, size=40)
    photo = str(manifest.parent / pd.read_csv(manifest)["path"].iloc[0])
    assert main(["locate", photo, "--model", "zeroshot:streetclip", "--json", "--backend", "torch"]) == 0
    (r,) = json.loads(capsys.readouterr().out)
    model = load_zeroshot_model("streetclip", progress=False)  # cached prompt embeddings this time
    enc = create_encoder("streetclip")
    probs = model.predict_proba(enc(torch.from_numpy(prepare_image(photo, enc.preprocess))[None]).detach().numpy())[0]
    top = np.argsort(-probs, kind="stable")[:5]
    assert [c["id"] for c in r["top_cells"]] == [model.candidates.ids[i] for i in top]
    assert r["radius_km"]["50"] <= r["radius_km"]["90"] and r["country_code"]


def test_zeroshot_without_weights_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path))
    monkeypatch.delenv("GEOSPOT_WEIGHTS_STREETCLIP", raising=False)
    (tmp_path / "p.jpg").write_bytes(b"")
    assert main(["locate", str(tmp_path / "p.jpg"), "--model", "zeroshot:streetclip"]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "geospot models --download streetclip" in message
