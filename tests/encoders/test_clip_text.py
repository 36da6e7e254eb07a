"""Our CLIP tokenizer and text tower against transformers, with a tiny vocabulary and tiny random configs saved locally."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geospot.encoders.clip_text import ClipTextSpec, load_text_tower
from clip_vocab import tiny_vocab as _tiny_vocab

from geospot.encoders.clip_tokenizer import ClipTokenizer

PROMPTS = ["A Street View photo in France.", "A Street View photo in Côte d'Ivoire.",
           "a street view photo in São Paulo, Brazil.", "  Tokyo's   streets:   2024!! ", "Ελλάδα — ok", "x"]


def test_tokenizer_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    _tiny_vocab(tmp_path)
    reference = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
    ours = ClipTokenizer.from_folder(tmp_path)
    for text in PROMPTS:
        assert ours.encode(text) == reference(text)["input_ids"], text
    merged = ours.encode("the street photo")
    assert len(merged) == 5, "merges must apply (the, street, photo are single tokens)"
    long = ours.encode("a " * 200)
    assert len(long) == 77 and long[0] == ours.bos_id and long[-1] == ours.eos_id


def test_text_tower_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    n_vocab = _tiny_vocab(tmp_path)
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        projection_dim=24,
        text_config=dict(vocab_size=n_vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=n_vocab - 2,
                         eos_token_id=n_vocab - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=28, patch_size=14))
    reference = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    reference.save_pretrained(tmp_path)
    tower, scale = load_text_tower(tmp_path)
    assert tower.spec.eos_token_id == n_vocab - 1 and scale == pytest.approx(float(reference.logit_scale.detach()))
    tok = ClipTokenizer.from_folder(tmp_path)
    ids, eos = tok.batch(PROMPTS)
    with torch.no_grad():
        expected = reference.get_text_features(input_ids=torch.from_numpy(ids),
                                               attention_mask=torch.from_numpy((np.arange(ids.shape[1]) <= eos[:, None])
                                                                               .astype(np.int64)))
        expected = getattr(expected, "pooler_output", expected)
        actual = tower(torch.from_numpy(ids), torch.from_numpy(eos))
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    # one prompt alone gives the same embedding as inside a padded batch (causal mask)
    single_ids, single_eos = tok.batch(PROMPTS[:1])
    with torch.no_grad():
        torch.testing.assert_close(tower(torch.from_numpy(single_ids), torch.from_numpy(single_eos))[0], actual[0],
                                   rtol=1e-5, atol=1e-5)


def test_vision_only_checkpoint_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps({"projection_dim": 8, "text_config": {"hidden_size": 8,
                                                      "num_attention_heads": 2}}))
    save_file({"vision_model.x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="no complete CLIP text tower"):
        load_text_tower(tmp_path)


def test_spec_defaults_are_clip_vit_b32():
    assert ClipTextSpec().hidden_size == 512 and ClipTextSpec().max_position_embeddings == 77
