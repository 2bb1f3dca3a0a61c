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
from dataclasses import dataclass
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


def _shade(value: float | None, low: float, high: float) -> str:
    """A colour-blind-safe ramp from orange (low) to blue (high); grey when there is no value."""
    if value is None or value != value:
        return "#d9d9d9"
    t = 0.5 if high <= low else (value - low) / (high - low)
    a, b = (230, 159, 0), (0, 114, 178)
    return "#%02x%02x%02x" % tuple(round(a[k] + t * (b[k] - a[k])) for k in range(3))


Place = tuple  # (lon, lat, name, value, rows): a fixed site (a road sensor) and its own figure


def map_png(districts: list[District], path: str | Path, *, values: Mapping[str, float] | None = None,
            points: Iterable[tuple[float, float, bool]] = (), title: str = "", value_label: str = "",
            places: Iterable[Place] = ()) -> Path:
    """Districts shaded by ``values``, with points (lon, lat, ok): ok drawn as dots, not ok as crosses;
    ``places`` as labelled triangles, shaded by their own value on the districts' ramp."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = dict(values or {})
    shown = [v for v in values.values() if v == v]
    low, high = (min(shown), max(shown)) if shown else (0.0, 1.0)
    x0, y0, x1, y1 = _bounds(districts)
    places = list(places)
    fig, ax = plt.subplots(figsize=(7, 7 * (y1 - y0) / ((x1 - x0) * math.cos(math.radians((y0 + y1) / 2)))))
    for d in districts:
        for ring in d.rings:
            ax.fill([x for x, _ in ring], [y for _, y in ring], facecolor=_shade(values.get(d.name), low, high),
                    edgecolor="#333333", linewidth=1)
        cx, cy = _centroid(d.rings[0])
        label = d.name + (f"\n{values[d.name]:.3g}" if d.name in values else "")
        ax.text(cx, cy - 0.006 * (y1 - y0) / 0.2 * (3 if places else 0), label, ha="center", va="top" if places
                else "center", fontsize=8, color="#111111")
    points = list(points)
    good = [(x, y) for x, y, ok in points if ok]
    bad = [(x, y) for x, y, ok in points if not ok]
    if good:
        ax.scatter(*zip(*good), s=6, c="#222222", alpha=0.5, label="right")
    if bad:
        ax.scatter(*zip(*bad), s=22, c="#cc0000", marker="x", label="wrong")
    for x, y, name, value, rows in places:
        ax.plot([x], [y], marker="^", markersize=11, markerfacecolor="#222222", markeredgecolor="white",
                markeredgewidth=1.2, linestyle="none", zorder=3)
        ax.annotate(f"{name}: {value:.3g}" + (f" ({rows} rows)" if rows else ""), (x, y), xytext=(8, 6),
                    textcoords="offset points", fontsize=7, color="#111111", zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "#666666", "lw": 0.5, "alpha": 0.9})
    if points:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_aspect(1 / math.cos(math.radians((y0 + y1) / 2)))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(title + (f" ({value_label}: orange low, blue high)" if value_label else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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


def map_svg(districts: list[District], *, values: Mapping[str, float] | None = None,
            points: Iterable[tuple[float, float, str]] = (), width: int = 520, value_label: str = "value",
            title: str = "District map", highlight: str | None = None, places: Iterable[Place] = ()) -> str:
    """Inline SVG: each district a focusable path that names its figure; points as small circles.

    ``highlight`` names a district drawn with a thick outline (the request's own, in the console).

    ``points`` are (lon, lat, label); a label starting with ``!`` is drawn as a highlighted point.
    ``places`` are (lon, lat, name, value, rows): focusable triangles that say their own figure.
    """
    values = dict(values or {})
    shown = [v for v in values.values() if v == v]
    low, high = (min(shown), max(shown)) if shown else (0.0, 1.0)
    x0, y0, x1, y1 = _bounds(districts)
    aspect = math.cos(math.radians((y0 + y1) / 2))
    height = int(width * (y1 - y0) / ((x1 - x0) * aspect))

    def xy(lon, lat):
        return (lon - x0) / (x1 - x0) * width, (y1 - lat) / (y1 - y0) * height

    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="civic-map" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="group" aria-label="{esc(title)}">', f"<title>{esc(title)}</title>"]
    for d in districts:
        value = values.get(d.name)
        text = f"{d.name}: {value_label} {value:.3g}" if value is not None else f"{d.name}: no data"
        path = " ".join("M " + " L ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(*p) for p in ring)) + " Z"
                        for ring in d.rings)
        mark = d.name == highlight
        text += " (this request's district)" if mark else ""
        parts.append(f'<path class="district{" highlighted" if mark else ""}" d="{path}" '
                     f'fill="{_shade(value, low, high)}" stroke="#222" stroke-width="{4 if mark else 1.2}" '
                     f'tabindex="0" role="img" aria-label="{esc(text)}" data-name="{esc(d.name)}">'
                     f"<title>{esc(text)}</title></path>")
        cx, cy = xy(*_centroid(list(d.rings[0])))
        parts.append(f'<text x="{cx:.1f}" y="{cy:.1f}" text-anchor="middle" font-size="12" font-weight="600" fill="#111" '
                     f'stroke="#fff" stroke-width="3" paint-order="stroke" aria-hidden="true">{esc(d.name)}</text>')
    for lon, lat, label in points:
        x, y = xy(lon, lat)
        marked = str(label).startswith("!")
        parts.append(f'<circle class="point{" marked" if marked else ""}" cx="{x:.1f}" cy="{y:.1f}" '
                     f'r="{6 if marked else 2.5}" fill="{"#cc0000" if marked else "#222"}" '
                     f'fill-opacity="{1 if marked else 0.55}"><title>{esc(str(label).lstrip("!"))}</title></circle>')
    for lon, lat, name, value, rows in places:
        x, y = xy(lon, lat)
        text = f"{name}: {value_label} {value:.3g}" + (f" over {rows} held-out rows" if rows else "")
        parts.append(f'<path class="place" d="M {x:.1f},{y - 9:.1f} L {x + 8:.1f},{y + 6:.1f} L {x - 8:.1f},'
                     f'{y + 6:.1f} Z" fill="{_shade(value, low, high)}" stroke="#111" stroke-width="1.5" '
                     f'tabindex="0" role="img" aria-label="{esc(text)}" data-name="{esc(str(name))}">'
                     f"<title>{esc(text)}</title></path>")
    parts.append("</svg>")
    return "\n".join(parts)


__all__ = ["District", "Place", "load_boundaries", "locate", "map_png", "map_svg"]
