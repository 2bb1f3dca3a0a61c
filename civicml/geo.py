"""An offline vector map: district boundaries (GeoJSON polygons) with values and points drawn on them.

Nothing is fetched: the boundaries come from a GeoJSON file (the synthetic city ships
``projects/service_requests/districts.geojson``; a use case may point at its own), and
are drawn as a matplotlib PNG (an MLflow artifact) or as inline SVG (the console,
where districts are focusable and say their figures). Coordinates are lon/lat degrees,
drawn equirectangular with the latitude's cosine as aspect, which is exact enough at
city scale.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping

from civicml.errors import InvalidInput, NotFound


@dataclass(frozen=True)
class District:
    name: str
    rings: tuple[tuple[tuple[float, float], ...], ...]  # outer rings of its polygons, (lon, lat) corners

    def contains(self, lon: float, lat: float) -> bool:
        return any(_in_ring(ring, lon, lat) for ring in self.rings)


def _in_ring(ring, x: float, y: float) -> bool:
    inside = False
    j = len(ring) - 1
    for i in range(len(ring)):
        (xi, yi), (xj, yj) = ring[i], ring[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def load_boundaries(path: str | Path, name_property: str = "name") -> list[District]:
    """Districts from a GeoJSON FeatureCollection of Polygon/MultiPolygon features."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no boundaries file '{path}'")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidInput(f"{path}: not valid GeoJSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise InvalidInput(f"{path}: expected a GeoJSON FeatureCollection")
    out = []
    for i, feature in enumerate(doc.get("features") or []):
        geometry = (feature or {}).get("geometry") or {}
        kind, coords = geometry.get("type"), geometry.get("coordinates")
        polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else None
        if not polygons:
            raise InvalidInput(f"{path}: feature {i} is not a Polygon or MultiPolygon")
        name = str((feature.get("properties") or {}).get(name_property, feature.get("id", i)))
        try:
            rings = tuple(tuple((float(x), float(y)) for x, y, *_ in polygon[0]) for polygon in polygons)
        except (TypeError, ValueError, IndexError):
            raise InvalidInput(f"{path}: feature {i} ({name}) has malformed coordinates") from None
        out.append(District(name, rings))
    if not out:
        raise InvalidInput(f"{path}: no features")
    return out


def locate(districts: Iterable[District], lon: float, lat: float) -> str | None:
    return next((d.name for d in districts if d.contains(lon, lat)), None)


def _bounds(districts):
    xs = [x for d in districts for r in d.rings for x, _ in r]
    ys = [y for d in districts for r in d.rings for _, y in r]
    return min(xs), min(ys), max(xs), max(ys)


MIN_ROWS = 30  # a district with fewer held-out rows is drawn hatched grey ("n too small"), not coloured
NO_DATA, TOO_FEW = "#d9d9d9", "#bdbdbd"
_WORSE, _MIDDLE, _BETTER = (202, 0, 32), (247, 247, 247), (5, 113, 176)  # red, white, blue (ColorBrewer RdBu)


@dataclass(frozen=True)
class Scale:
    """A fixed colour scale for one metric: red at ``worst``, blue at ``best``, whatever the metric's direction
    (for accuracy worst=0, best=1; for an error worst is a stated bound and best is 0). Never stretched between
    the lowest and highest district; values beyond ``worst`` are drawn as ``worst``."""

    metric: str
    worst: float
    best: float
    unit: str = ""
    note: str = ""  # where a bound comes from, e.g. "the MAE of answering the held-out median"

    def position(self, value: float) -> float:
        """0 at worst, 1 at best (clipped)."""
        if self.best == self.worst:
            return 0.5
        return min(1.0, max(0.0, (value - self.worst) / (self.best - self.worst)))

    def colour(self, value: float | None) -> str:
        if value is None or value != value:
            return NO_DATA
        t = self.position(value)
        a, b, t = (_WORSE, _MIDDLE, 2 * t) if t < 0.5 else (_MIDDLE, _BETTER, 2 * t - 1)
        return "#%02x%02x%02x" % tuple(round(a[k] + t * (b[k] - a[k])) for k in range(3))

    def caption(self, note: bool = True) -> str:
        unit = f" ({self.unit})" if self.unit else ""
        return (f"{self.metric}{unit}: fixed scale, red = worse ({self.worst:.3g}), blue = better ({self.best:.3g})"
                + (f"; {self.note}" if self.note and note else ""))

    def to_dict(self) -> dict:
        return {"metric": self.metric, "worst": self.worst, "best": self.best, "unit": self.unit, "note": self.note}


def _fill(scale: Scale, value, rows, min_rows: int) -> str | None:
    """A district's colour; None when it has too few rows to be coloured (drawn hatched)."""
    if value is not None and rows is not None and rows < min_rows:
        return None
    return scale.colour(value)


def inside(district: District, lon: float, lat: float, key: int = 0) -> tuple[float, float] | None:
    """(lon, lat) when it lies in ``district``; else a deterministic position inside it (seeded by ``key``), so
    a row is never drawn in a district other than its recorded one; None if none is found."""
    if math.isfinite(lon) and math.isfinite(lat) and district.contains(lon, lat):
        return lon, lat
    import random

    rng = random.Random(key)
    for ring in district.rings:
        xs, ys = [x for x, _ in ring], [y for _, y in ring]
        for _ in range(200):
            x, y = rng.uniform(min(xs), max(xs)), rng.uniform(min(ys), max(ys))
            if district.contains(x, y):
                return x, y
    return None


def fit_points(districts: list[District], lon, lat, recorded,
               ok) -> tuple[list[tuple[float, float, bool, str]], int, int]:
    """Points drawn in their recorded district: (lon, lat, ok, district) per drawable row, how many were moved
    inside their recorded district (their coordinates fall elsewhere), and how many could not be drawn (no
    recorded district, or one the boundaries do not have)."""
    by_name = {d.name: d for d in districts}
    out, moved, omitted = [], 0, 0
    for i, (x, y, name, good) in enumerate(zip(lon, lat, recorded, ok)):
        district = by_name.get(str(name)) if name is not None and name == name else None
        where = inside(district, float(x), float(y), key=i) if district else None
        if where is None:
            omitted += 1
            continue
        moved += where != (float(x), float(y))
        out.append((where[0], where[1], bool(good), district.name))
    return out, moved, omitted


Place = tuple  # (lon, lat, name, value, rows): a fixed site (a road sensor) and its own figure


def _small_note(min_rows: int) -> str:
    return f"n too small: under {min_rows} held-out rows, not coloured"


@dataclass(frozen=True)
class MapLayers:
    """What a map draws over its districts: figures per district on a fixed ``scale`` with their row counts
    (under ``min_rows``: hatched, not coloured), points, labelled ``places`` and the title."""

    scale: Scale | None = None
    values: Mapping[str, float] | None = None
    rows: Mapping[str, int] | None = None
    points: Iterable[tuple] = ()
    places: Iterable[Place] = ()
    points_note: str = ""
    min_rows: int = MIN_ROWS
    title: str = ""


def _layers(layers: MapLayers | None, given: dict) -> MapLayers:
    return replace(layers or MapLayers(), **given)  # an unknown keyword is a TypeError, as for any call


def map_png(districts: list[District], path: str | Path, layers: MapLayers | None = None, **given) -> Path:
    """Draw ``layers`` (a :class:`MapLayers`, or its fields by keyword) as a PNG at ``path``. Districts coloured by ``values`` on the fixed ``scale`` (red worse, blue better) with a legend; districts
    with fewer than ``min_rows`` ``rows`` hatched grey; points (lon, lat, ok): ok drawn as dots, not ok as
    crosses, ``points_note`` saying how many were drawn; ``places`` as labelled triangles on the same scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import patheffects
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.patches import Patch

    m = _layers(layers, given)
    if m.scale is None:
        raise TypeError("map_png needs a scale")
    scale, points, title, places, points_note, min_rows = m.scale, m.points, m.title, m.places, m.points_note, \
        m.min_rows
    values, rows = dict(m.values or {}), dict(m.rows or {})
    x0, y0, x1, y1 = _bounds(districts)
    places = list(places)
    fig, ax = plt.subplots(figsize=(7, 7 * (y1 - y0) / ((x1 - x0) * math.cos(math.radians((y0 + y1) / 2))) + 1.2))
    small = False
    for d in districts:
        fill = _fill(scale, values.get(d.name), rows.get(d.name), min_rows)
        small |= fill is None
        for ring in d.rings:
            ax.fill([x for x, _ in ring], [y for _, y in ring], facecolor=fill or TOO_FEW,
                    hatch=None if fill else "///", edgecolor="#333333", linewidth=1)
        cx, cy = _centroid(d.rings[0])
        label = d.name + (f"\n{values[d.name]:.3g}" if d.name in values else "") + (
            f"\nn={rows[d.name]}" if fill is None else "")
        ax.text(cx, cy - 0.006 * (y1 - y0) / 0.2 * (3 if places else 0), label, ha="center", va="top" if places
                else "center", fontsize=8, color="#111111", zorder=5,
                path_effects=[patheffects.withStroke(linewidth=3, foreground="white")])
    points = list(points)
    good = [(x, y) for x, y, ok in points if ok]
    bad = [(x, y) for x, y, ok in points if not ok]
    handles = []
    if good:
        handles.append(ax.scatter(*zip(*good), s=6, c="#222222", alpha=0.5, label="right"))
    if bad:
        handles.append(ax.scatter(*zip(*bad), s=22, c="#000000", marker="x", label="wrong"))
    for x, y, name, value, n in places:
        ax.plot([x], [y], marker="^", markersize=11, markerfacecolor=scale.colour(value), markeredgecolor="#111111",
                markeredgewidth=1.2, linestyle="none", zorder=3)
        ax.annotate(f"{name}: {value:.3g}" + (f" ({n} rows)" if n else ""), (x, y), xytext=(8, 6),
                    textcoords="offset points", fontsize=7, color="#111111", zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "#666666", "lw": 0.5, "alpha": 0.9})
    if small:
        handles.append(Patch(facecolor=TOO_FEW, hatch="///", edgecolor="#333333", label=_small_note(min_rows)))
    if any(d.name not in values for d in districts):
        handles.append(Patch(facecolor=NO_DATA, edgecolor="#333333", label="no held-out rows"))
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=7,
                  title=points_note or None, title_fontsize=7)
    ramp = LinearSegmentedColormap.from_list("worse-better", [scale.colour(scale.worst), scale.colour(
        (scale.worst + scale.best) / 2), scale.colour(scale.best)])
    bar = fig.colorbar(plt.cm.ScalarMappable(Normalize(0, 1), ramp), ax=ax, orientation="horizontal",
                       fraction=0.04, pad=0.08)
    bar.set_ticks([0, 1], labels=[f"{scale.worst:.3g} (worse)", f"{scale.best:.3g} (better)"])
    bar.set_label(scale.caption(), fontsize=8)
    ax.set_aspect(1 / math.cos(math.radians((y0 + y1) / 2)))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _centroid(ring) -> tuple[float, float]:
    area = cx = cy = 0.0
    for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1]):
        cross = x0 * y1 - x1 * y0
        area += cross
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    if abs(area) < 1e-15:
        return sum(x for x, _ in ring) / len(ring), sum(y for _, y in ring) / len(ring)
    return cx / (3 * area), cy / (3 * area)


def map_svg(districts: list[District], layers: MapLayers | None = None, *, width: int = 520,
            highlight: str | None = None, **given) -> str:
    """Inline SVG of ``layers`` (a :class:`MapLayers`, or its fields by keyword; the title defaults to
    "District map"): each district a focusable path that names its figure, coloured on the fixed ``scale`` (red
    worse, blue better; no colours without one), with a legend; small districts hatched; points as circles.

    ``highlight`` names a district drawn with a thick outline (the request's own, in the console).

    ``points`` are (lon, lat, label); a label starting with ``!`` is drawn as a highlighted point.
    ``places`` are (lon, lat, name, value, rows): focusable triangles that say their own figure.
    """
    m = _layers(layers, given)
    scale, points, places, points_note, min_rows = m.scale, m.points, m.places, m.points_note, m.min_rows
    title = m.title or "District map"
    values, rows = dict(m.values or {}), dict(m.rows or {})
    label = scale.metric if scale else "value"
    x0, y0, x1, y1 = _bounds(districts)
    aspect = math.cos(math.radians((y0 + y1) / 2))
    height = int(width * (y1 - y0) / ((x1 - x0) * aspect))
    legend_h = 92

    def xy(lon, lat):
        return (lon - x0) / (x1 - x0) * width, (y1 - lat) / (y1 - y0) * height

    def colour(value):
        return scale.colour(value) if scale else NO_DATA

    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="civic-map" viewBox="0 0 {width} {height + legend_h}" '
             f'width="{width}" height="{height + legend_h}" role="group" aria-label="{esc(title)}">',
             f"<title>{esc(title)}</title>",
             '<defs><pattern id="too-few" width="6" height="6" patternUnits="userSpaceOnUse" '
             f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{TOO_FEW}"/>'
             '<line x1="0" y1="0" x2="0" y2="6" stroke="#555" stroke-width="2"/></pattern></defs>']
    small = False
    for d in districts:
        value, n = values.get(d.name), rows.get(d.name)
        fill = _fill(scale, value, n, min_rows) if scale else NO_DATA
        text = f"{d.name}: {label} {value:.3g}" if value is not None else f"{d.name}: no data"
        if fill is None:
            small = True
            text += f" over {n} rows: n too small"
        path = " ".join("M " + " L ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(*p) for p in ring)) + " Z"
                        for ring in d.rings)
        mark = d.name == highlight
        text += " (this request's district)" if mark else ""
        parts.append(f'<path class="district{" highlighted" if mark else ""}{" too-few" if fill is None else ""}" '
                     f'd="{path}" fill="{fill or "url(#too-few)"}" stroke="#222" stroke-width="{4 if mark else 1.2}" '
                     f'tabindex="0" role="img" aria-label="{esc(text)}" data-name="{esc(d.name)}">'
                     f"<title>{esc(text)}</title></path>")
        cx, cy = xy(*_centroid(list(d.rings[0])))
        parts.append(f'<text x="{cx:.1f}" y="{cy:.1f}" text-anchor="middle" font-size="12" font-weight="600" fill="#111" '
                     f'stroke="#fff" stroke-width="3" paint-order="stroke" aria-hidden="true">{esc(d.name)}</text>')
    for lon, lat, text in points:
        x, y = xy(lon, lat)
        marked = str(text).startswith("!")
        parts.append(f'<circle class="point{" marked" if marked else ""}" cx="{x:.1f}" cy="{y:.1f}" '
                     f'r="{4 if marked else 2.5}" fill="{"#000" if marked else "#222"}" stroke="#fff" '
                     f'stroke-width="{1 if marked else 0}" fill-opacity="{1 if marked else 0.55}">'
                     f'<title>{esc(str(text).lstrip("!"))}</title></circle>')
    for lon, lat, name, value, n in places:
        x, y = xy(lon, lat)
        text = f"{name}: {label} {value:.3g}" + (f" over {n} held-out rows" if n else "")
        parts.append(f'<path class="place" d="M {x:.1f},{y - 9:.1f} L {x + 8:.1f},{y + 6:.1f} L {x - 8:.1f},'
                     f'{y + 6:.1f} Z" fill="{colour(value)}" stroke="#111" stroke-width="1.5" '
                     f'tabindex="0" role="img" aria-label="{esc(text)}" data-name="{esc(str(name))}">'
                     f"<title>{esc(text)}</title></path>")
    parts.append(_svg_legend(scale, height, small, min_rows, points_note,
                             any(d.name not in values for d in districts)))
    parts.append("</svg>")
    return "\n".join(parts)


def _svg_legend(scale: Scale | None, top: int, small: bool, min_rows: int, points_note: str,
                empty: bool) -> str:
    esc = html.escape
    if scale is None:
        caption = "No fixed colour scale was recorded for this version: districts are not coloured"
        return (f'<g class="legend" transform="translate(0 {top})"><text x="4" y="16" font-size="11">'
                f"{esc(caption)}</text></g>")
    stops = "".join(f'<stop offset="{t}" stop-color="{scale.colour(scale.worst + t * (scale.best - scale.worst))}"/>'
                    for t in (0, 0.5, 1))
    out = [f'<g class="legend" transform="translate(0 {top})" role="img" aria-label="{esc(scale.caption())}">',
           f'<defs><linearGradient id="worse-better">{stops}</linearGradient></defs>',
           f'<text class="legend-caption" x="4" y="14" font-size="11">{esc(scale.caption(note=False))}</text>',
           f'<text class="scale-note" x="4" y="58" font-size="10">{esc(scale.note)}</text>' if scale.note else "",
           '<rect x="4" y="20" width="200" height="10" fill="url(#worse-better)" stroke="#222" stroke-width="0.5"/>',
           f'<text class="scale-worst" x="4" y="42" font-size="10">{scale.worst:.3g} (worse)</text>',
           f'<text class="scale-best" x="204" y="42" font-size="10" text-anchor="end">{scale.best:.3g} (better)</text>']
    if small:
        out.append('<rect x="220" y="20" width="14" height="10" fill="url(#too-few)" stroke="#222" stroke-width="0.5"/>'
                   f'<text class="too-few" x="238" y="29" font-size="10">{esc(_small_note(min_rows))}</text>')
    if empty:
        out.append(f'<rect x="220" y="34" width="14" height="10" fill="{NO_DATA}" stroke="#222" stroke-width="0.5"/>'
                   '<text class="no-data" x="238" y="43" font-size="10">no held-out rows</text>')
    if points_note:
        out.append(f'<text class="points-note" x="4" y="{72 if scale.note else 58}" font-size="10">'
                   f"{esc(points_note)}</text>")
    out.append("</g>")
    return "".join(out)


__all__ = ["District", "MIN_ROWS", "Place", "Scale", "fit_points", "inside", "load_boundaries", "locate", "MapLayers", "map_png",
           "map_svg"]
