"""Leak-proof masks: parsing, painting, area, round trips, errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from geospot.data.masks import DEFAULT_FILL, Mask, occlusion_masks, parse_mask


def _noise(w: int = 40, h: int = 30) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "spec, box",
    [
        ("bottom:0.1", (0.0, 0.9, 1.0, 1.0)),
        ("top:0.2", (0.0, 0.0, 1.0, 0.2)),
        ("left:0.3", (0.0, 0.0, 0.3, 1.0)),
        ("right:0.25", (0.75, 0.0, 1.0, 1.0)),
        ("tl:0.25x0.1", (0.0, 0.0, 0.25, 0.1)),
        ("tr:0.25x0.1", (0.75, 0.0, 1.0, 0.1)),
        ("bl:0.25x0.5", (0.0, 0.5, 0.25, 1.0)),
        ("br:0.5x0.25", (0.5, 0.75, 1.0, 1.0)),
        ("center:0.5x0.5", (0.25, 0.25, 0.75, 0.75)),
        ("box:0.1,0.2,0.3,0.4", (0.1, 0.2, 0.3, 0.4)),
    ],
)
def test_parse_each_kind(spec, box):
    m = parse_mask(spec)
    assert len(m.boxes) == 1
    np.testing.assert_allclose(m.boxes[0], box, atol=1e-12)
    assert str(m) == spec  # canonical text is the spec itself
    assert parse_mask(str(m)) == m


def test_parse_combined_fill_case_and_spaces():
    m = parse_mask(" Bottom:0.1 + BR:0.25x0.1 + fill:black ")
    assert len(m.boxes) == 2 and m.fill == (0, 0, 0)
    assert str(m) == "bottom:0.1+br:0.25x0.1+fill:black"
    assert parse_mask("top:0.1+fill:grey") == parse_mask("top:0.1")
    assert parse_mask("centre:0.2x0.2") == parse_mask("center:0.2x0.2")
    assert parse_mask("top:0.1+fill:mean").fill == "mean"
    assert parse_mask("top:0.1+fill:10,20,30").fill == (10, 20, 30)
    for empty in (None, "", "none", " NONE "):
        assert parse_mask(empty).is_empty
    assert str(Mask.none()) == "none"
    assert not Mask.none() and parse_mask("top:0.1")


@pytest.mark.parametrize(
    "spec, reason",
    [
        ("bottom", "kind:value"),
        ("bottom:abc", "not a number"),
        ("bottom:0", r"must be in \(0, 1\]"),
        ("top:1.5", r"must be in \(0, 1\]"),
        ("br:0.25", "WxH"),
        ("tl:0.2x0", r"must be in \(0, 1\]"),
        ("box:0.1,0.2,0.3", "four numbers"),
        ("box:0.5,0.2,0.3,0.4", "x0 < x1"),
        ("wiggle:0.1", "unknown kind 'wiggle'"),
        ("bottom:0.1++top:0.1", "empty part"),
        ("fill:pink", "unknown fill"),
        ("fill:1,2", "three integers"),
        ("fill:black+fill:mean", "fill twice"),
    ],
)
def test_invalid_specs_explain_and_show_grammar(spec, reason):
    with pytest.raises(ValueError, match=reason) as e:
        parse_mask(spec)
    assert "mask spec:" in str(e.value)  # the grammar is shown


def test_apply_array_paints_bottom_strip_only():
    x = _noise(40, 30)
    out = parse_mask("bottom:0.1").apply_array(x)
    assert out is not x and np.array_equal(x, _noise(40, 30))  # input untouched
    assert (out[27:] == DEFAULT_FILL).all()  # 10 % of 30 rows = 3 rows
    assert np.array_equal(out[:27], x[:27])


def test_outward_rounding_covers_requested_area():
    # 0.1 of 25 px = 2.5 px -> 3 px painted; a box from 0.33 to 0.34 of 10 px still paints a pixel.
    m = parse_mask("top:0.1+box:0.33,0.5,0.34,0.6")
    assert m.pixel_boxes(10, 25) == [(0, 0, 10, 3), (3, 12, 4, 15)]
    # Exact multiples are not widened by float noise (0.85 * 100 = 85.00000000000001).
    assert parse_mask("bottom:0.15").pixel_boxes(100, 100) == [(0, 85, 100, 100)]
    assert parse_mask("right:0.25").pixel_boxes(8, 4) == [(6, 0, 8, 4)]


def test_apply_pil_matches_apply_array():
    x = _noise(37, 23)
    for spec in ("br:0.3x0.2+top:0.05", "center:0.5x0.5+fill:black", "left:0.4+fill:mean"):
        m = parse_mask(spec)
        img = Image.fromarray(x)
        out = m.apply(img)
        assert out is not img and np.array_equal(np.asarray(img), x)
        np.testing.assert_array_equal(np.asarray(out), m.apply_array(x))


def test_mean_fill_uses_only_visible_pixels():
    x = np.zeros((10, 10, 3), dtype=np.uint8)
    x[:, 5:] = 255  # right half white
    out = parse_mask("right:0.5+fill:mean").apply_array(x)
    assert (out[:, 5:] == 0).all()  # mean of the visible (black) half, not of the hidden white
    y = np.full((4, 4, 3), 200, dtype=np.uint8)
    assert (parse_mask("left:0.5+fill:mean").apply_array(y) == 200).all()


def test_apply_other_modes_and_errors():
    m = parse_mask("top:0.5")
    gray = m.apply(Image.new("L", (4, 4), 0))
    assert np.asarray(gray)[0, 0] == round(124 * 0.299 + 116 * 0.587 + 104 * 0.114)
    rgba = m.apply(Image.new("RGBA", (4, 4), (1, 2, 3, 0)))
    assert rgba.getpixel((0, 0)) == (*DEFAULT_FILL, 255) and rgba.getpixel((0, 3)) == (1, 2, 3, 0)
    with pytest.raises(ValueError, match="mode 'CMYK'"):
        m.apply(Image.new("CMYK", (4, 4)))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        m.apply_array(np.zeros((4, 4), dtype=np.uint8))
    assert np.array_equal(Mask.none().apply_array(_noise()), _noise())


def test_area_is_union():
    assert Mask.none().area == 0.0
    assert parse_mask("bottom:0.1").area == pytest.approx(0.1)
    # Overlapping strips: 0.5 + 0.5 - 0.25.
    assert parse_mask("left:0.5+bottom:0.5").area == pytest.approx(0.75)
    assert parse_mask("left:0.5+left:0.5").area == pytest.approx(0.5)
    assert parse_mask("top:1").area == pytest.approx(1.0)


def test_dict_roundtrip_and_errors():
    m = parse_mask("bottom:0.15+br:0.25x0.1+fill:mean")
    d = m.to_dict()
    assert d["spec"] == "bottom:0.15+br:0.25x0.1+fill:mean"
    assert Mask.from_dict(d) == m
    assert Mask.from_dict(Mask.none().to_dict()) == Mask.none()
    with pytest.raises(ValueError, match="'boxes'"):
        Mask.from_dict({"spec": "bottom:0.1"})
    with pytest.raises(ValueError, match="0 <= x0 < x1 <= 1"):
        Mask(((0.0, 0.0, 1.5, 1.0),))
    with pytest.raises(ValueError, match="0..255"):
        Mask((), (0, 0, 300))


def test_occlusion_masks():
    masks = occlusion_masks(grid=3)
    named = ["bottom strip", "top strip", "top-left corner", "top-right corner",
             "bottom-left corner", "bottom-right corner", "centre"]
    assert list(masks)[:7] == named
    assert masks["bottom strip"].area == pytest.approx(0.15)
    assert masks["bottom-right corner"].area == pytest.approx(0.0625)
    assert masks["centre"].area == pytest.approx(0.25)
    grid = [k for k in masks if k.startswith("grid ")]
    assert grid == [f"grid r{i}c{j}" for i in range(3) for j in range(3)]
    # Grid cells tile the image: together they cover every pixel.
    x = np.zeros((31, 29, 3), dtype=np.uint8)
    covered = np.zeros(x.shape[:2], dtype=bool)
    for k in grid:
        covered |= (masks[k].apply_array(x) != 0).any(axis=2)
        assert parse_mask(str(masks[k])) == masks[k]
    assert covered.all()
    assert np.asarray(masks["grid r0c0"].apply_array(x))[0, 0].tolist() == list(DEFAULT_FILL)
    with pytest.raises(ValueError, match="positive integer"):
        occlusion_masks(0)


@pytest.mark.realdata
def test_mask_on_real_street_view_image(shared_data):
    import csv

    manifest = shared_data / "streetview-global" / "manifest.csv"
    with open(manifest, newline="") as f:
        row = next(csv.DictReader(f))
    img = Image.open(manifest.parent / row["path"]).convert("RGB")
    m = parse_mask("bottom:0.15+br:0.25x0.1")
    out = m.apply(img)
    assert out.size == img.size
    w, h = img.size
    a, b = np.asarray(out), np.asarray(img)
    top = h - int(np.ceil(0.15 * h - 1e-6))
    assert (a[top:] == DEFAULT_FILL).all()
    assert np.array_equal(a[:top], b[:top])
