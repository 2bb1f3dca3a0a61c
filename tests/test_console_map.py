"""The city's district boundaries agree with the generator and the integrator; the offline map draws them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from civicml.errors import InvalidInput, NotFound
from civicml.geo import load_boundaries, locate, map_png, map_svg
from projects.service_requests.boundaries import GEOJSON, feature_collection
from projects.service_requests.generator import CITY_BOUNDS, DISTRICTS


def test_shipped_geojson_is_what_the_generator_makes_and_agrees_with_nearest_centre():
    assert json.loads(GEOJSON.read_text()) == json.loads(json.dumps(feature_collection()))
    districts = load_boundaries(GEOJSON)
    assert sorted(d.name for d in districts) == sorted(d.name for d in DISTRICTS)
    rng = np.random.default_rng(0)
    (lat0, lat1), (lon0, lon1) = CITY_BOUNDS["lat"], CITY_BOUNDS["lon"]
    for lat, lon in zip(rng.uniform(lat0, lat1, 300), rng.uniform(lon0, lon1, 300)):
        nearest = min(DISTRICTS, key=lambda d: (lat - d.lat) ** 2 + (lon - d.lon) ** 2).name
        assert locate(districts, lon, lat) == nearest  # as the integrator infers a missing district
    assert locate(districts, -75.0, 40.7) is None


def test_map_png_and_accessible_svg(tmp_path):
    districts = load_boundaries(GEOJSON)
    path = map_png(districts, tmp_path / "map.png", values={"Midtown": 0.9, "Harbor": 0.6},
                   points=[(-73.93, 40.73, True), (-74.0, 40.64, False)], title="t", value_label="accuracy")
    assert path.read_bytes()[:4] == b"\x89PNG"
    svg = map_svg(districts, values={"Midtown": 0.9}, points=[(-73.93, 40.73, "!wrong")], highlight="Midtown")
    assert svg.count('tabindex="0"') == 8 and 'aria-label="Midtown: value 0.9 (this request&#x27;s district)"' in svg
    assert 'class="point marked"' in svg and "http" not in svg.replace("http://www.w3.org/2000/svg", "")


def test_bad_boundaries_files_say_what_is_wrong(tmp_path):
    with pytest.raises(NotFound):
        load_boundaries(tmp_path / "none.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [{"geometry": {"type": "Point"}}]}')
    with pytest.raises(InvalidInput, match="not a Polygon"):
        load_boundaries(bad)
    bad.write_text("{nope")
    with pytest.raises(InvalidInput, match="not valid GeoJSON"):
        load_boundaries(bad)
