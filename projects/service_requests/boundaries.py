"""Riverton's district boundaries: the nearest-centre (Voronoi) cells of the district centres, clipped
to the city's bounds, so that they agree with the integrator, which assigns a request without a district
to the nearest centre. ``python -m projects.service_requests.boundaries`` rewrites ``districts.geojson``.
"""

from __future__ import annotations

import json
from pathlib import Path

from projects.service_requests.generator import CITY_BOUNDS, DISTRICTS

GEOJSON = Path(__file__).with_name("districts.geojson")


def _clip(polygon: list[tuple[float, float]], a: float, b: float, c: float) -> list[tuple[float, float]]:
    """Keep the part of ``polygon`` where a*x + b*y <= c (Sutherland-Hodgman, one half-plane)."""
    out = []
    for i, p in enumerate(polygon):
        q = polygon[(i + 1) % len(polygon)]
        fp, fq = a * p[0] + b * p[1] - c, a * q[0] + b * q[1] - c
        if fp <= 0:
            out.append(p)
        if (fp < 0 < fq) or (fq < 0 < fp):
            t = fp / (fp - fq)
            out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
    return out


def district_polygons() -> dict[str, list[tuple[float, float]]]:
    """District name -> its boundary as (lon, lat) corners, counter-clockwise, not closed."""
    (lat0, lat1), (lon0, lon1) = CITY_BOUNDS["lat"], CITY_BOUNDS["lon"]
    out = {}
    for d in DISTRICTS:
        cell = [(lon0, lat0), (lon1, lat0), (lon1, lat1), (lon0, lat1)]
        for other in DISTRICTS:
            if other is d:
                continue
            # closer to d than to other:  2(o - d).p <= |o|^2 - |d|^2
            a, b = 2 * (other.lon - d.lon), 2 * (other.lat - d.lat)
            c = (other.lon ** 2 + other.lat ** 2) - (d.lon ** 2 + d.lat ** 2)
            cell = _clip(cell, a, b, c)
        out[d.name] = [(round(x, 6), round(y, 6)) for x, y in cell]
    return out


def feature_collection() -> dict:
    features = []
    for d in DISTRICTS:
        ring = [list(p) for p in district_polygons()[d.name]]
        features.append({"type": "Feature", "id": d.id,
                         "properties": {"name": d.name, "district_id": d.id, "centre": [d.lon, d.lat]},
                         "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]}})
    return {"type": "FeatureCollection", "name": "Riverton districts", "features": features}


def write_geojson(path: Path = GEOJSON) -> Path:
    Path(path).write_text(json.dumps(feature_collection()) + "\n")
    return Path(path)


if __name__ == "__main__":
    print(write_geojson())
