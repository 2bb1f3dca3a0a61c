"""Use case 3: forecast the next hour's vehicle count at each road sensor.

Sources: the Transport department's sensor CSV and the Environment
department's weather JSON (:mod:`projects.traffic_flow.generator` writes
synthetic ones); :mod:`projects.traffic_flow.integrate` joins and cleans them
into one row per sensor and hour with lagged counts, calendar and weather
features. Validation is chronological: the last quarter of the period.

Model family: ``mlp`` (:mod:`projects.traffic_flow.model`), logged as a
models-from-code pyfunc that takes the feature columns and returns counts.
It must beat the naive seasonal forecasts (same hour last week / yesterday),
whose MAE is logged next to the model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from projects.base import Dataset, UseCase
from projects.traffic_flow.generator import HOLIDAYS, SENSORS, write_sources
from projects.traffic_flow.integrate import FEATURES, TARGET, integrate_sources


class TrafficFlow(UseCase):
    name = "traffic_flow"
    task = "regression"
    metric = "mae"
    direction = "minimize"
    registered_model = "traffic-flow-forecaster"
    description = "Forecast next hour's vehicle count per road sensor from recent counts, calendar and weather."
    default_size = 20000
    policy_file = Path(__file__).parent / "policy.yaml"
    # the sensors stand in the same synthetic city as the 311 requests: its districts draw their map
    boundaries_file = Path(__file__).parent.parent / "service_requests" / "districts.geojson"
    # what a person calls each column, and its unit: explanations, rules and answers speak in these
    columns = {
        "lag_1": {"label": "flow in the last hour", "unit": "vehicles"},
        "lag_2": {"label": "flow 2 hours earlier", "unit": "vehicles"},
        "lag_3": {"label": "flow 3 hours earlier", "unit": "vehicles"},
        "lag_24": {"label": "flow at this hour a day earlier", "unit": "vehicles"},
        "lag_25": {"label": "flow an hour before that, a day earlier", "unit": "vehicles"},
        "lag_168": {"label": "flow at this hour a week earlier", "unit": "vehicles"},
        "lag_169": {"label": "flow an hour before that, a week earlier", "unit": "vehicles"},
        "mean_24": {"label": "average hourly flow over the last day", "unit": "vehicles"},
        "hour_sin": {"label": "hour of day (sine)", "unit": ""},
        "hour_cos": {"label": "hour of day (cosine)", "unit": ""},
        "dow_sin": {"label": "day of week (sine)", "unit": ""},
        "dow_cos": {"label": "day of week (cosine)", "unit": ""},
        "weekend": {"label": "weekend", "unit": ""},
        "holiday": {"label": "public holiday", "unit": ""},
        "temp_c": {"label": "temperature", "unit": "°C"},
        "precip_mm": {"label": "rain or snow", "unit": "mm per hour"},
        "snow": {"label": "snowing", "unit": ""},
        "vehicle_count": {"label": "flow in the next hour", "unit": "vehicles"},
    }

    @property
    def families(self):
        from projects.traffic_flow.model import FAMILIES  # imports Paddle

        return FAMILIES

    def generate_sources(self, folder: Path, n: int, seed: int) -> list[Path]:
        return write_sources(Path(folder), int(n), int(seed))

    def integrate(self, sources: list[Path]) -> Dataset:
        frame, report = integrate_sources([Path(p) for p in sources])
        return Dataset.build(self.name, frame, TARGET, FEATURES, sources, report)

    def split(self, dataset: Dataset, seed: int = 0, valid_fraction: float = 0.25) -> tuple[Dataset, Dataset]:
        """Chronological: the last ``valid_fraction`` of the hours validate (``seed`` is not used).

        A random split would let the model see the hours around every validation hour.
        """
        hours = np.sort(dataset.frame["timestamp"].unique())
        cut = hours[int(len(hours) * (1 - valid_fraction))]
        is_valid = (dataset.frame["timestamp"] >= cut).to_numpy()
        return dataset.subset(np.flatnonzero(~is_valid)), dataset.subset(np.flatnonzero(is_valid))


__all__ = ["FEATURES", "HOLIDAYS", "SENSORS", "TARGET", "TrafficFlow"]
