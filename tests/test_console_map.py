"""The city's district boundaries agree with the generator and the integrator; the offline map draws them."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from civicml.errors import InvalidInput, NotFound
from civicml.geo import Scale, load_boundaries, locate, map_png, map_svg
from projects.service_requests.boundaries import GEOJSON, feature_collection
from projects.service_requests.generator import CITY_BOUNDS, DISTRICTS

pytest_plugins = ["explained_model"]  # the registered 311 router the explain and console tests share

ACCURACY = Scale("accuracy", 0.0, 1.0, "share of rows answered right")


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
    path = map_png(districts, tmp_path / "map.png", scale=ACCURACY, values={"Midtown": 0.9, "Harbor": 0.6},
                   points=[(-73.93, 40.73, True), (-74.0, 40.64, False)], title="t")
    assert path.read_bytes()[:4] == b"\x89PNG"
    svg = map_svg(districts, scale=ACCURACY, values={"Midtown": 0.9}, points=[(-73.93, 40.73, "!wrong")],
                  highlight="Midtown")
    assert svg.count('class="district') == 8
    assert 'aria-label="Midtown: accuracy 0.9 (this request&#x27;s district)"' in svg
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


# the honest map (issue 23 item 6): a legend with a fixed scale, red worse whatever the metric's direction, every
# held-out row, the card's own per-district figures, every point inside the district recorded for it

def _fills(svg: str) -> dict[str, str]:
    return dict((name, fill) for fill, name in re.findall(r'<path class="district[^"]*" d="[^"]*" fill="([^"]+)"'
                                                          r'[^>]*data-name="([^"]+)"', svg))


def _redness(fill: str) -> int:  # red minus blue of a #rrggbb fill: high is red (worse), low is blue (better)
    return int(fill[1:3], 16) - int(fill[5:7], 16)


def test_the_legend_names_the_metric_and_the_ends_of_its_fixed_scale(tmp_path):
    svg = map_svg(load_boundaries(GEOJSON), scale=ACCURACY, values={"Midtown": 0.94, "Harbor": 1.0})
    legend = re.search(r'<g class="legend".*?</g>', svg, re.S).group(0)
    assert "accuracy (share of rows answered right): fixed scale, red = worse (0), blue = better (1)" in legend
    assert ">0 (worse)</text>" in legend and ">1 (better)</text>" in legend


def test_the_scale_is_fixed_not_stretched_between_the_lowest_and_highest_district():
    districts = load_boundaries(GEOJSON)
    close = _fills(map_svg(districts, scale=ACCURACY, values={"Midtown": 0.94, "Harbor": 1.0}))
    apart = _fills(map_svg(districts, scale=ACCURACY, values={"Midtown": 0.94, "Harbor": 0.6}))
    assert close["Midtown"] == apart["Midtown"]  # 0.94 is 0.94, whichever other districts the model has
    assert close["Midtown"] != ACCURACY.colour(0.0) and _redness(close["Midtown"]) < 0  # on the blue (better) side
    assert abs(_redness(close["Midtown"]) - _redness(close["Harbor"])) < 40  # 94% and 100% look alike
    assert _redness(apart["Harbor"]) > _redness(apart["Midtown"])


@pytest.fixture(scope="module")
def traffic_holdout(tmp_path_factory):
    from projects import get_use_case

    return get_use_case("traffic_flow").holdout(tmp_path_factory.mktemp("tf"), n=600)


@pytest.fixture(scope="module")
def requests_rows(tmp_path_factory):
    from projects import get_use_case

    return get_use_case("service_requests").holdout(tmp_path_factory.mktemp("sr"), n=900)


def _draw(folder, frame, truth, answers, regression) -> tuple[dict, str]:
    from registry.views import district_views

    boundaries = load_boundaries(GEOJSON)
    assert "map.png" in district_views(folder, frame, truth, answers, regression, boundaries)
    doc = json.loads((folder / "map.json").read_text())
    return doc, map_svg(boundaries, scale=Scale(**doc["scale"]), values=doc["values"], rows=doc["rows"],
                        places=[(p["lon"], p["lat"], p["name"], p[doc["metric"]], p["rows"]) for p in doc["places"]])


def test_red_means_worse_for_the_router_and_for_traffic(tmp_path, requests_rows, traffic_holdout):
    frame = requests_rows.frame.reset_index(drop=True)
    truth = frame[requests_rows.target].to_numpy()
    answers = np.where((frame.district == "Harbor") & (frame.index % 2 == 0), "wrong", truth)  # accuracy: max
    (tmp_path / "r").mkdir()
    doc, svg = _draw(tmp_path / "r", frame, truth, answers, False)
    fills = _fills(svg)
    assert doc["scale"]["worst"] == 0 and doc["scale"]["best"] == 1 and doc["values"]["Harbor"] < 0.6
    assert _redness(fills["Harbor"]) > _redness(fills["Midtown"]) and _redness(fills["Midtown"]) < 0
    frame = traffic_holdout.frame.reset_index(drop=True)  # mae: lower is better
    truth = frame[traffic_holdout.target].to_numpy(float)
    (tmp_path / "t").mkdir()
    bad = frame.sensor_id == sorted(frame.sensor_id.unique())[0]  # one sensor's answers far off, the rest close
    doc, svg = _draw(tmp_path / "t", frame, truth, truth + np.where(bad, 200.0, 5.0), True)
    values, fills = doc["values"], _fills(svg)
    worst, best = max(values, key=values.get), min(values, key=values.get)
    assert doc["metric"] == "mae" and doc["scale"]["best"] == 0 and doc["scale"]["worst"] > 200
    assert "bound = the mae of answering the held-out median" in svg and "red = worse" in svg
    assert _redness(fills[worst]) > 0 > _redness(fills[best])  # high error is red here, low accuracy was red above
    site = dict((name, fill) for fill, name in re.findall(r'<path class="place" d="[^"]*" fill="([^"]+)"[^>]*'
                                                           r'data-name="([^"]+)"', svg))
    by_error = sorted(doc["places"], key=lambda p: p["mae"])
    assert _redness(site[by_error[-1]["name"]]) > 0 > _redness(site[by_error[0]["name"]])


def test_small_districts_are_hatched_and_say_n_too_small():
    svg = map_svg(load_boundaries(GEOJSON), scale=ACCURACY, values={"Midtown": 0.2, "Harbor": 0.9},
                  rows={"Midtown": 12, "Harbor": 140})
    fills = _fills(svg)
    assert fills["Midtown"] == "url(#too-few)" and fills["Harbor"].startswith("#")
    assert "Midtown: accuracy 0.2 over 12 rows: n too small" in svg and "n too small: under 30 held-out rows" in svg


def test_the_registered_map_is_on_every_held_out_row_with_the_cards_figures_and_points_in_their_district(
        explained_model, requests_holdout, tmp_path):
    """Registration's views use a sample (here 150 rows); the map and per-district figures use every held-out row,
    computed as the model card computes its ``report_by: [district]`` figures."""
    from registry import ModelStore
    from registry.card import evaluate
    from registry.gates import PromotionContext, predicted_labels
    from registry.rules import boundaries_for, insights

    store = ModelStore(explained_model.settings)
    version = store.get_version(explained_model.name, explained_model.version.version)
    local = store.fetch(explained_model.name, version)
    boundaries = boundaries_for(dict(version.tags))
    frame = requests_holdout.frame.reset_index(drop=True)
    insights(local, frame, "department", tmp_path, boundaries, max_rows=150)
    doc = json.loads((tmp_path / "map.json").read_text())
    assert doc["rows_total"] == len(frame) == sum(doc["rows"].values()) > 150
    ctx = PromotionContext("", local, None, frame, "department")
    answers = predicted_labels(ctx.model(local).predict(ctx.as_input(local, ctx.features(local))))
    card = evaluate(frame["department"], answers, frame, "classification", "", report_by=("district",))
    table = card.per_group["district"]
    assert doc["values"] == pytest.approx(table["accuracy"].round(4).to_dict())
    assert doc["rows"] == table["rows"].astype(int).to_dict()
    points = doc["points"]
    assert len(points) == len(frame)  # every row has a recorded district on the map: all are drawn
    assert all(locate(boundaries, p["lon"], p["lat"]) == p["district"] for p in points)
    elsewhere = sum(locate(boundaries, x, y) != d for x, y, d in zip(frame.lon, frame.lat, frame.district))
    note = f"{len(frame)} of {len(frame)} held-out rows drawn; {elsewhere} moved into their recorded district"
    assert elsewhere > 0 and note in doc["points_note"]
    for name, n in doc["rows"].items():
        assert sum(p["district"] == name for p in points) == n
