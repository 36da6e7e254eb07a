"""Leak-proof image masks: paint fixed regions of every image with a constant colour.

Street View captures carry shortcuts a model can learn instead of the scene: the
car's roof and camera mount at the bottom, the Google logo and copyright text in
the corners, date stamps. A :class:`Mask` blanks such regions. The same mask is
applied when embedding, training and predicting, and it is recorded in the model
config so a checkpoint always sees images the way it was trained.

Boxes are relative image coordinates ``(x0, y0, x1, y1)`` in ``[0, 1]`` with
``x`` to the right and ``y`` downwards, so one mask fits every image size. When
painted, a box is rounded *outwards* to whole pixels: the painted area always
covers the requested area (a mask must never leave a sliver of a logo visible).

Mask spec grammar (``parse_mask``; case-insensitive, spaces ignored)::

    spec    := "none" | "" | part ("+" part)*
    part    := "bottom:F" | "top:F" | "left:F" | "right:F"     strip of fraction F of the height/width
             | "tl:WxH" | "tr:WxH" | "bl:WxH" | "br:WxH"       corner box W wide and H high (fractions)
             | "center:WxH" (or "centre:WxH")                  centred box W wide and H high
             | "box:x0,y0,x1,y1"                               any box, 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1
             | "fill:COLOUR"                                   at most once; default "grey"
    F, W, H := a number in (0, 1]
    COLOUR  := "grey" (124,116,104 ~ the ImageNet mean, neutral for encoders)
             | "black" | "mean" (mean colour of the unmasked pixels of each image)
             | "R,G,B" (integers 0..255)

Examples: ``"bottom:0.1"``, ``"br:0.25x0.1+bl:0.25x0.1"``,
``"box:0.1,0.2,0.3,0.4+fill:black"``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]
Fill = Union[str, tuple[int, int, int]]

#: Mid-grey close to the ImageNet mean: normalises to ~0 for ImageNet encoders.
DEFAULT_FILL: tuple[int, int, int] = (124, 116, 104)
NAMED_FILLS: dict[str, tuple[int, int, int] | None] = {
    "grey": DEFAULT_FILL,
    "gray": DEFAULT_FILL,
    "black": (0, 0, 0),
    "mean": None,  # computed per image
}

GRAMMAR = (
    "mask spec: parts joined by '+': bottom:F | top:F | left:F | right:F (strips, F in (0,1]); "
    "tl:WxH | tr:WxH | bl:WxH | br:WxH (corner boxes); center:WxH; box:x0,y0,x1,y1; "
    "fill:grey|black|mean|R,G,B; or 'none'. Example: 'bottom:0.1+br:0.25x0.1'"
)

# Tolerance (in pixels) for outward rounding: 0.85 * 100 is 85.00000000000001 in
# floating point and must paint from row 85, not 84.
_PIXEL_EPS = 1e-6
# Tolerance for recognising named shapes when printing a spec.
_SHAPE_EPS = 1e-9


def _fmt(v: float) -> str:
    """Short, stable number text: 12 significant digits hide float noise like 1 - 0.85."""
    return format(float(v), ".12g")


def _exact_fmt(v: float) -> str:
    """Short text when it reads back exactly, else the shortest exact repr."""
    short = _fmt(v)
    return short if float(short) == float(v) else repr(float(v))


def _normalise_fill(fill: Any) -> Fill:
    if isinstance(fill, str):
        key = fill.strip().lower()
        if key not in NAMED_FILLS:
            raise ValueError(f"unknown mask fill {fill!r}: use grey, black, mean or R,G,B")
        rgb = NAMED_FILLS[key]
        return "mean" if rgb is None else rgb
    try:
        rgb = tuple(int(c) for c in fill)
    except (TypeError, ValueError):
        raise ValueError(f"mask fill must be a colour name or an (R, G, B) triple, got {fill!r}") from None
    if len(rgb) != 3 or any(c < 0 or c > 255 for c in rgb) or any(int(c) != c for c in fill):
        raise ValueError(f"mask fill must be three integers in 0..255, got {fill!r}")
    return rgb  # type: ignore[return-value]


def _check_box(box: Any) -> Box:
    try:
        b = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"mask box must be four numbers (x0, y0, x1, y1), got {box!r}") from None
    if len(b) != 4 or not all(math.isfinite(v) for v in b):
        raise ValueError(f"mask box must be four finite numbers (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = b
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ValueError(
            f"mask box {box!r} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (relative coordinates)"
        )
    return b  # type: ignore[return-value]


@dataclass(frozen=True)
class Mask:
    """Boxes in relative coordinates ``(x0, y0, x1, y1)`` painted with ``fill``.

    ``fill`` is an ``(R, G, B)`` triple (default :data:`DEFAULT_FILL`) or
    ``"mean"``: the mean colour of the pixels the mask leaves visible, so the
    fill itself carries nothing from the hidden area.
    """

    boxes: tuple[Box, ...] = ()
    fill: Fill = DEFAULT_FILL

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", tuple(_check_box(b) for b in self.boxes))
        object.__setattr__(self, "fill", _normalise_fill(self.fill))

    # -- construction -------------------------------------------------------
    @classmethod
    def none(cls) -> "Mask":
        """The empty mask: images pass unchanged."""
        return cls(())

    @classmethod
    def from_dict(cls, d: dict) -> "Mask":
        """Inverse of :meth:`to_dict` (``boxes`` are authoritative; ``spec`` is informative)."""
        if not isinstance(d, dict) or "boxes" not in d:
            raise ValueError(f"mask dict needs a 'boxes' list, got {d!r}")
        fill = d.get("fill", DEFAULT_FILL)
        return cls(tuple(tuple(b) for b in d["boxes"]), fill if isinstance(fill, str) else tuple(fill))

    def to_dict(self) -> dict:
        """JSON-ready description, stored in model configs."""
        return {
            "spec": str(self),
            "boxes": [list(b) for b in self.boxes],
            "fill": self.fill if isinstance(self.fill, str) else list(self.fill),
        }

    # -- properties ---------------------------------------------------------
    @property
    def is_empty(self) -> bool:
        return not self.boxes

    def __bool__(self) -> bool:
        """``if mask:`` is true only when the mask hides something."""
        return not self.is_empty

    @property
    def area(self) -> float:
        """Fraction of the image covered by the union of the boxes (overlaps counted once)."""
        if not self.boxes:
            return 0.0
        xs = sorted({v for b in self.boxes for v in (b[0], b[2])})
        ys = sorted({v for b in self.boxes for v in (b[1], b[3])})
        total = 0.0
        # Coordinate compression: each elementary cell is either fully inside a box or outside all.
        for xa, xb in zip(xs[:-1], xs[1:]):
            for ya, yb in zip(ys[:-1], ys[1:]):
                if any(b[0] <= xa and xb <= b[2] and b[1] <= ya and yb <= b[3] for b in self.boxes):
                    total += (xb - xa) * (yb - ya)
        return min(total, 1.0)

    def pixel_boxes(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """Boxes in pixels ``(left, top, right, bottom)`` (right/bottom exclusive), rounded outwards."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        out = []
        for x0, y0, x1, y1 in self.boxes:
            left = max(0, math.floor(x0 * width + _PIXEL_EPS))
            top = max(0, math.floor(y0 * height + _PIXEL_EPS))
            right = min(width, math.ceil(x1 * width - _PIXEL_EPS))
            bottom = min(height, math.ceil(y1 * height - _PIXEL_EPS))
            # A box thinner than a pixel still hides at least one pixel.
            right = max(right, min(left + 1, width))
            bottom = max(bottom, min(top + 1, height))
            out.append((left, top, right, bottom))
        return out

    # -- application --------------------------------------------------------
    def apply_array(self, x: np.ndarray) -> np.ndarray:
        """Return a masked copy of an ``H x W x 3`` uint8 array."""
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != 3 or x.dtype != np.uint8:
            raise ValueError(f"apply_array expects an HxWx3 uint8 array, got shape {x.shape} dtype {x.dtype}")
        out = x.copy()
        if self.is_empty:
            return out
        height, width = x.shape[:2]
        boxes = self.pixel_boxes(width, height)
        colour = self._colour(x, boxes)
        for left, top, right, bottom in boxes:
            out[top:bottom, left:right] = colour
        return out

    def apply(self, img: Image.Image) -> Image.Image:
        """Return a masked copy of an RGB (or RGBA / L) PIL image."""
        if img.mode not in ("RGB", "RGBA", "L"):
            raise ValueError(f"Mask.apply expects an RGB, RGBA or L image, got mode {img.mode!r}")
        out = img.copy()
        if self.is_empty:
            return out
        boxes = self.pixel_boxes(*img.size)
        rgb = np.asarray(img.convert("RGB")) if self.fill == "mean" else None
        colour = self._colour(rgb, boxes)
        if img.mode == "L":
            # ITU-R 601 luma, the same conversion PIL uses for RGB -> L.
            paint: Any = int(round(colour[0] * 0.299 + colour[1] * 0.587 + colour[2] * 0.114))
        elif img.mode == "RGBA":
            paint = (*colour, 255)
        else:
            paint = colour
        for box in boxes:
            out.paste(paint, box)
        return out

    def _colour(self, rgb: np.ndarray | None, boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int]:
        if self.fill != "mean":
            return self.fill  # type: ignore[return-value]
        assert rgb is not None
        keep = np.ones(rgb.shape[:2], dtype=bool)
        for left, top, right, bottom in boxes:
            keep[top:bottom, left:right] = False
        if not keep.any():
            return DEFAULT_FILL  # nothing visible to average
        mean = rgb[keep].reshape(-1, 3).mean(axis=0)
        return tuple(int(round(float(c))) for c in mean)  # type: ignore[return-value]

    # -- text ---------------------------------------------------------------
    def __str__(self) -> str:
        parts = [_box_to_part(b) for b in self.boxes]
        if self.fill != DEFAULT_FILL:
            if isinstance(self.fill, str):
                fill = self.fill
            else:
                fill = "black" if self.fill == NAMED_FILLS["black"] else ",".join(str(c) for c in self.fill)
            parts.append(f"fill:{fill}")
        if not self.boxes:
            return "none" if self.fill == DEFAULT_FILL else "+".join(parts)
        return "+".join(parts)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _SHAPE_EPS


def _named_part(b: Box, fmt) -> str:
    """Spec text for box ``b``: the named shape it matches, else ``box:``."""
    x0, y0, x1, y1 = b
    left, top, right, bottom = _close(x0, 0), _close(y0, 0), _close(x1, 1), _close(y1, 1)
    if left and right and bottom and not top:
        return f"bottom:{fmt(1 - y0)}"
    if left and right and top and not bottom:
        return f"top:{fmt(y1)}"
    if top and bottom and left and not right:
        return f"left:{fmt(x1)}"
    if top and bottom and right and not left:
        return f"right:{fmt(1 - x0)}"
    if top and left:
        return f"tl:{fmt(x1)}x{fmt(y1)}"
    if top and right:
        return f"tr:{fmt(1 - x0)}x{fmt(y1)}"
    if bottom and left:
        return f"bl:{fmt(x1)}x{fmt(1 - y0)}"
    if bottom and right:
        return f"br:{fmt(1 - x0)}x{fmt(1 - y0)}"
    if _close(x0 + x1, 1) and _close(y0 + y1, 1):
        return f"center:{fmt(x1 - x0)}x{fmt(y1 - y0)}"
    return "box:" + ",".join(fmt(v) for v in b)


def _box_to_part(b: Box) -> str:
    """The most readable spec part that parses back to exactly ``b``."""
    for fmt in (_fmt, _exact_fmt):
        part = _named_part(b, fmt)
        if _parse_part(part, part) == ("box", b):
            return part
    # Float arithmetic of a named shape (e.g. 1 - f) may not give b back: raw box coordinates always do.
    return "box:" + ",".join(_exact_fmt(v) for v in b)


def _fraction(text: str, what: str, part: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"mask part {part!r}: {what} {text!r} is not a number. {GRAMMAR}") from None
    if not (0.0 < v <= 1.0):
        raise ValueError(f"mask part {part!r}: {what} {text!r} must be in (0, 1]. {GRAMMAR}")
    return v


def _size(text: str, part: str) -> tuple[float, float]:
    pieces = text.split("x")
    if len(pieces) != 2:
        raise ValueError(f"mask part {part!r}: expected WxH such as 0.25x0.1, got {text!r}. {GRAMMAR}")
    return _fraction(pieces[0], "width", part), _fraction(pieces[1], "height", part)


def _parse_fill(text: str, part: str) -> Fill:
    if "," in text:
        pieces = text.split(",")
        try:
            rgb = tuple(int(p) for p in pieces)
        except ValueError:
            raise ValueError(f"mask part {part!r}: fill R,G,B must be integers. {GRAMMAR}") from None
        if len(rgb) != 3 or any(c < 0 or c > 255 for c in rgb):
            raise ValueError(f"mask part {part!r}: fill needs three integers in 0..255. {GRAMMAR}")
        return rgb  # type: ignore[return-value]
    if text not in NAMED_FILLS:
        raise ValueError(f"mask part {part!r}: unknown fill {text!r}. {GRAMMAR}")
    return text


def parse_mask(spec: "str | Mask | None") -> Mask:
    """Parse a mask spec (grammar in the module docstring). ``None``/``""``/``"none"`` -> empty mask."""
    if isinstance(spec, Mask):
        return spec
    if spec is None:
        return Mask.none()
    if not isinstance(spec, str):
        raise ValueError(f"mask spec must be a string, got {type(spec).__name__}. {GRAMMAR}")
    text = "".join(spec.split()).lower()
    if text in ("", "none"):
        return Mask.none()
    boxes: list[Box] = []
    fill: Fill | None = None
    for part in text.split("+"):
        if not part:
            raise ValueError(f"mask spec {spec!r} has an empty part (stray '+'). {GRAMMAR}")
        kind, value = _parse_part(part, spec)
        if kind == "fill":
            if fill is not None:
                raise ValueError(f"mask spec {spec!r} sets fill twice. {GRAMMAR}")
            fill = value
        else:
            boxes.append(value)
    return Mask(tuple(boxes), DEFAULT_FILL if fill is None else fill)


def _parse_part(part: str, spec: str) -> tuple[str, Any]:
    """One spec part -> ``("box", Box)`` or ``("fill", Fill)``."""
    kind, sep, arg = part.partition(":")
    if not sep or not arg:
        raise ValueError(f"mask part {part!r} of {spec!r} needs the form kind:value. {GRAMMAR}")
    if kind == "bottom":
        return "box", (0.0, 1.0 - _fraction(arg, "fraction", part), 1.0, 1.0)
    if kind == "top":
        return "box", (0.0, 0.0, 1.0, _fraction(arg, "fraction", part))
    if kind == "left":
        return "box", (0.0, 0.0, _fraction(arg, "fraction", part), 1.0)
    if kind == "right":
        return "box", (1.0 - _fraction(arg, "fraction", part), 0.0, 1.0, 1.0)
    if kind in ("tl", "tr", "bl", "br"):
        w, h = _size(arg, part)
        x0, x1 = (0.0, w) if kind[1] == "l" else (1.0 - w, 1.0)
        y0, y1 = (0.0, h) if kind[0] == "t" else (1.0 - h, 1.0)
        return "box", (x0, y0, x1, y1)
    if kind in ("center", "centre"):
        w, h = _size(arg, part)
        return "box", (0.5 - w / 2, 0.5 - h / 2, 0.5 + w / 2, 0.5 + h / 2)
    if kind == "box":
        try:
            values = [float(p) for p in arg.split(",")]
        except ValueError:
            raise ValueError(f"mask part {part!r}: box needs four numbers x0,y0,x1,y1. {GRAMMAR}") from None
        if len(values) != 4:
            raise ValueError(f"mask part {part!r}: box needs four numbers x0,y0,x1,y1. {GRAMMAR}")
        try:
            return "box", _check_box(values)
        except ValueError as e:
            raise ValueError(f"mask part {part!r}: {e}. {GRAMMAR}") from None
    if kind == "fill":
        return "fill", _parse_fill(arg, part)
    raise ValueError(f"mask part {part!r}: unknown kind {kind!r}. {GRAMMAR}")


def occlusion_masks(grid: int = 3) -> dict[str, Mask]:
    """Named masks for a shortcut audit: hide one region at a time and watch the accuracy.

    Returns, in this order: ``"bottom strip"`` and ``"top strip"`` (15 % of the
    height), the four corners ``"top-left corner"``, ``"top-right corner"``,
    ``"bottom-left corner"``, ``"bottom-right corner"`` (25 % x 25 %),
    ``"centre"`` (50 % x 50 %), and the ``grid x grid`` cells ``"grid r{i}c{j}"``
    (row ``i`` from the top, column ``j`` from the left).
    """
    if not isinstance(grid, (int, np.integer)) or grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid!r}")
    masks = {
        "bottom strip": parse_mask("bottom:0.15"),
        "top strip": parse_mask("top:0.15"),
        "top-left corner": parse_mask("tl:0.25x0.25"),
        "top-right corner": parse_mask("tr:0.25x0.25"),
        "bottom-left corner": parse_mask("bl:0.25x0.25"),
        "bottom-right corner": parse_mask("br:0.25x0.25"),
        "centre": parse_mask("center:0.5x0.5"),
    }
    for i in range(grid):
        for j in range(grid):
            masks[f"grid r{i}c{j}"] = Mask(((j / grid, i / grid, (j + 1) / grid, (i + 1) / grid),))
    return masks
