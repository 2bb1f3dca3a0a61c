"""A seeded procedural generator of street-scene photos, one class per reported problem.

Every image is drawn on a 96x96 canvas, rotated, centre-cropped to 64x64 and
box-filtered down to 32x32 RGB. Image ``i`` of a run uses its own generator
``default_rng([seed, i])``, so any image can be regenerated on its own.

1. **Ground.** Asphalt (grey 70-125, per-pixel speckle texture). With
   probability 0.45 a wall (concrete beige/grey, or brick with mortar lines)
   fills the top 25-60 % of the frame; graffiti scenes always have a wall, and
   it fills 45-100 % of their frame.
2. **Distractors** any class may show: lane markings (white or yellow dashes,
   p=0.5 on asphalt), a manhole cover (dark disc, p=0.15), scattered leaves
   (p=0.2), a small puddle (p=0.12), and a plain wall (see 1).
3. **The problem itself**, the cue that decides the class:

   ========================  ===============================================================
   ``pothole``               an irregular dark hole (jittered ellipse, brown-black), a pale
                             crumbled rim and gravel specks around it
   ``overflowing_bin``       a green/blue/grey bin with a lid, 5-14 bright bags and pieces
                             of litter piled on top and lying around it
   ``graffiti``              2-5 thick strokes (random walks) and bubble-letter outlines in
                             saturated colours on the wall
   ``fallen_tree``           a thick brown trunk across the road at a random angle, a few
                             branches, and a cluster of green foliage blobs at its crown
   ``flooding``              muddy or grey-blue water over 40-85 % of the frame, a wavy
                             shoreline, bright horizontal ripple lines and a sky reflection
   ``clear_street``          nothing more than the ground and distractors
   ========================  ===============================================================

4. **Camera.** A rotation of up to +-25 degrees; lighting: a global brightness
   factor 0.55-1.35, a linear shadow gradient of up to 35 % in a random
   direction, and a colour cast (each channel x N(1, 0.06)).
5. **Occlusion.** With probability 0.35 a parked car, pedestrian or sign (a
   rectangle or ellipse of a random colour) covers 5-20 % of the frame.
6. **Sensor noise.** Gaussian noise with sigma 0.01-0.06 (of full scale), then
   8-bit quantisation when the PNG is written.

The classes are balanced (``i % 6`` over a seeded permutation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("pothole", "overflowing_bin", "graffiti", "fallen_tree", "flooding", "clear_street")
SIZE = 32
_CANVAS = 96
_CROP = 64


def _rgb(rng, base, spread=12):
    return tuple(int(np.clip(c + rng.normal(0, spread), 0, 255)) for c in base)


def _bright(rng):
    palette = [(230, 30, 120), (20, 200, 230), (250, 220, 20), (240, 40, 30), (90, 230, 40), (160, 60, 230),
               (255, 130, 0)]
    return _rgb(rng, palette[rng.integers(len(palette))], 20)


def _span(rng, low, high):
    """Uniform in [low, high], tolerating low > high (a wall covering the frame): then ``high``."""
    return float(rng.uniform(min(low, high), high))


def _ground(draw: ImageDraw.ImageDraw, rng, wall_fraction: float) -> int:
    grey = int(rng.uniform(70, 125))
    draw.rectangle([0, 0, _CANVAS, _CANVAS], fill=_rgb(rng, (grey, grey, grey + 3), 4))
    wall_bottom = int(_CANVAS * wall_fraction)
    if wall_bottom > 0:
        brick = rng.random() < 0.5
        colour = _rgb(rng, (150, 70, 55) if brick else (200, 190, 165), 15)
        draw.rectangle([0, 0, _CANVAS, wall_bottom], fill=colour)
        if brick:
            mortar = _rgb(rng, (185, 180, 170), 8)
            for row, y in enumerate(range(0, wall_bottom, 8)):
                draw.line([0, y, _CANVAS, y], fill=mortar, width=1)
                for x in range((row % 2) * 8, _CANVAS, 16):
                    draw.line([x, y, x, min(y + 8, wall_bottom)], fill=mortar, width=1)
    return wall_bottom


def _distractors(draw, rng, top: int):
    if top < _CANVAS - 10 and rng.random() < 0.5:
        colour = (235, 235, 230) if rng.random() < 0.6 else (230, 200, 40)
        x = int(rng.uniform(25, 70))
        for y in range(top + int(rng.uniform(0, 10)), _CANVAS, 22):
            draw.line([x, y, x + int(rng.normal(0, 2)), y + 11], fill=colour, width=3)
    if rng.random() < 0.15:
        cx, cy, r = rng.uniform(15, 80), _span(rng, max(top, 15), 85), rng.uniform(5, 8)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_rgb(rng, (45, 45, 48), 5), outline=(95, 95, 95))
    if rng.random() < 0.2:
        for _ in range(int(rng.integers(6, 16))):
            x, y = rng.uniform(0, _CANVAS), _span(rng, top, _CANVAS)
            draw.ellipse([x, y, x + 2.5, y + 1.5], fill=_rgb(rng, (120, 95, 35), 25))
    if rng.random() < 0.12:
        cx, cy = rng.uniform(15, 80), _span(rng, max(top, 20), 85)
        draw.ellipse([cx - 7, cy - 3, cx + 7, cy + 3], fill=_rgb(rng, (90, 110, 135), 10))


def _pothole(draw, rng, top):
    cx, cy = rng.uniform(28, 68), _span(rng, max(top + 14, 35), 75)
    rx, ry = rng.uniform(9, 18), rng.uniform(6, 13)
    angles = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    radii = rng.uniform(0.7, 1.15, len(angles))
    outer = [(cx + 1.25 * rx * r * np.cos(a), cy + 1.25 * ry * r * np.sin(a)) for a, r in zip(angles, radii)]
    inner = [(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radii)]
    draw.polygon(outer, fill=_rgb(rng, (150, 145, 135), 10))
    draw.polygon(inner, fill=_rgb(rng, (38, 30, 24), 8))
    for _ in range(int(rng.integers(8, 20))):
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(1.2, 1.7)
        x, y = cx + d * rx * np.cos(a), cy + d * ry * np.sin(a)
        draw.rectangle([x, y, x + 1.5, y + 1.5], fill=_rgb(rng, (160, 155, 145), 20))


def _bin(draw, rng, top):
    x0, y1 = rng.uniform(20, 56), _span(rng, max(top + 38, 60), 88)
    w, h = rng.uniform(16, 24), rng.uniform(22, 32)
    body = _rgb(rng, [(40, 110, 50), (40, 70, 150), (70, 70, 75)][rng.integers(3)], 10)
    draw.rectangle([x0, y1 - h, x0 + w, y1], fill=body)
    draw.rectangle([x0 - 2, y1 - h - 3, x0 + w + 2, y1 - h], fill=tuple(max(c - 25, 0) for c in body))
    for _ in range(int(rng.integers(5, 15))):
        on_top = rng.random() < 0.55
        x = rng.uniform(x0 - 6, x0 + w + 4) if on_top else rng.uniform(x0 - 18, x0 + w + 16)
        y = rng.uniform(y1 - h - 12, y1 - h) if on_top else rng.uniform(y1 - 8, min(y1 + 6, _CANVAS))
        s = rng.uniform(3, 8)
        colour = _bright(rng) if rng.random() < 0.6 else _rgb(rng, (25, 25, 25), 8)
        draw.ellipse([x, y, x + s, y + s * rng.uniform(0.6, 1.2)], fill=colour)


def _graffiti(draw, rng, top):
    for _ in range(int(rng.integers(2, 6))):
        colour = _bright(rng)
        x, y = rng.uniform(15, 80), rng.uniform(8, max(top - 8, 12))
        points = [(x, y)]
        for _ in range(int(rng.integers(4, 9))):
            x = float(np.clip(x + rng.normal(0, 10), 2, _CANVAS - 2))
            y = float(np.clip(y + rng.normal(0, 7), 2, max(top - 2, 6)))
            points.append((x, y))
        draw.line(points, fill=colour, width=int(rng.integers(2, 5)), joint="curve")
    if rng.random() < 0.6:
        colour, fill = _bright(rng), _bright(rng)
        x = rng.uniform(15, 45)
        y = rng.uniform(10, max(top - 20, 12))
        for k in range(int(rng.integers(2, 4))):
            draw.ellipse([x + 12 * k, y, x + 12 * k + 11, y + 15], fill=fill, outline=colour, width=2)


def _fallen_tree(draw, rng, top):
    angle = rng.uniform(-0.6, 0.6) + (np.pi if rng.random() < 0.5 else 0.0)
    cx, cy = rng.uniform(35, 60), _span(rng, max(top + 10, 45), 70)
    length = rng.uniform(45, 70)
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    trunk = _rgb(rng, (95, 60, 30), 12)
    draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=trunk, width=int(rng.integers(5, 9)))
    for _ in range(int(rng.integers(2, 5))):
        t = rng.uniform(0.1, 0.9)
        bx, by = cx - dx + 2 * dx * t, cy - dy + 2 * dy * t
        b_angle = angle + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
        draw.line([bx, by, bx + 14 * np.cos(b_angle), by + 14 * np.sin(b_angle)], fill=trunk, width=2)
    crown_x, crown_y = cx + dx, cy + dy
    for _ in range(int(rng.integers(5, 10))):
        x, y, r = crown_x + rng.normal(0, 8), crown_y + rng.normal(0, 7), rng.uniform(4, 9)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_rgb(rng, (50, 120, 40), 20))


def _flooding(draw, rng, top):
    level = _CANVAS * (1 - rng.uniform(0.4, 0.85))
    level = max(level, top - 10)
    water = _rgb(rng, [(95, 110, 130), (110, 95, 70), (80, 100, 115)][rng.integers(3)], 10)
    xs = np.linspace(0, _CANVAS, 13)
    shore = [(float(x), float(level + rng.normal(0, 3))) for x in xs]
    draw.polygon(shore + [(_CANVAS, _CANVAS), (0, _CANVAS)], fill=water)
    sky = _rgb(rng, (170, 190, 215), 12)
    sx = rng.uniform(10, 60)
    reflection = tuple((a + b) // 2 for a, b in zip(water, sky))
    draw.rectangle([sx, level + 8, sx + rng.uniform(12, 30), _CANVAS], fill=reflection)
    for _ in range(int(rng.integers(5, 12))):
        y = _span(rng, level + 4, _CANVAS)
        x = rng.uniform(0, 80)
        draw.line([x, y, x + rng.uniform(6, 20), y], fill=tuple(min(c + 55, 255) for c in water), width=1)


_DRAW = {"pothole": _pothole, "overflowing_bin": _bin, "graffiti": _graffiti, "fallen_tree": _fallen_tree,
         "flooding": _flooding, "clear_street": lambda draw, rng, top: None}


def _occlude(draw, rng):
    if rng.random() >= 0.35:
        return
    area = rng.uniform(0.05, 0.2) * _CROP * _CROP
    w = rng.uniform(0.5, 2.0) * np.sqrt(area)
    h = area / w
    x, y = rng.uniform(16, 80 - w / 2), rng.uniform(16, 80 - h / 2)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    if rng.random() < 0.5:
        draw.rectangle([x, y, x + w, y + h], fill=colour)
    else:
        draw.ellipse([x, y, x + w, y + h], fill=colour)


def render(label: str, rng: np.random.Generator) -> np.ndarray:
    """One 32x32 RGB image of ``label`` as uint8 HWC."""
    wall = rng.uniform(0.45, 1.0) if label == "graffiti" else (rng.uniform(0.25, 0.6) if rng.random() < 0.45 else 0.0)
    canvas = Image.new("RGB", (_CANVAS, _CANVAS))
    draw = ImageDraw.Draw(canvas)
    top = _ground(draw, rng, wall)
    _distractors(draw, rng, top)
    _DRAW[label](draw, rng, top)
    _occlude(draw, rng)
    canvas = canvas.rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR)
    offset = (_CANVAS - _CROP) // 2
    canvas = canvas.crop((offset, offset, offset + _CROP, offset + _CROP)).resize((SIZE, SIZE), Image.BOX)
    image = np.asarray(canvas, dtype=np.float32) / 255.0
    image = image * rng.normal(1.0, 0.06, size=3) * rng.uniform(0.55, 1.35)
    direction = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1) - 0.5
    shadow = 1.0 - rng.uniform(0, 0.35) * (0.5 + np.cos(direction) * xx + np.sin(direction) * yy)
    image = image * shadow[..., None]
    image = image + rng.normal(0, rng.uniform(0.01, 0.06), size=image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_images(folder: Path, n: int, seed: int) -> Path:
    """Write ``n`` images into ``folder/<class>/<class>_<i>.png``; return ``folder``."""
    folder = Path(folder)
    labels = np.random.default_rng(seed).permutation(np.arange(n) % len(CLASSES))
    for name in CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i, k in enumerate(labels):
        label = CLASSES[int(k)]
        pixels = render(label, np.random.default_rng([seed, i]))
        Image.fromarray(pixels).save(folder / label / f"{label}_{i:05d}.png", optimize=False, compress_level=1)
    return folder
