"""An air-quality department export (a regression with a declared unit), for the confidence tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OZONE_YAML = """\
name: ozone
task: regression
target: Ozone
sources: [{path: airq.csv}]
types: {month: category}
columns: {Temp: {unit: "F"}, Wind: {label: Wind speed, unit: mph}, Ozone: {unit: ppb}}
metric: mae
families: [linear]
"""


def ozone_frame(n: int, seed: int) -> pd.DataFrame:
    """``n`` days of air quality: ozone rises with temperature and sun, falls with wind, with noise, and a
    month's bump; Solar.R is missing on about one day in eight."""
    rng = np.random.default_rng(seed)
    temp = rng.uniform(56, 97, n).round()
    wind = rng.uniform(2, 20, n).round(1)
    solar = rng.uniform(10, 330, n).round()
    month = rng.choice(["May", "Jun", "Jul", "Aug", "Sep"], n)
    bump = pd.Series(month).map({"May": -6, "Jun": 0, "Jul": 8, "Aug": 6, "Sep": -3}).to_numpy()
    ozone = 42 + 1.6 * (temp - 77) - 2.5 * (wind - 10) + 0.05 * (solar - 170) + bump + rng.normal(0, 4, n)
    solar[rng.random(n) < 0.12] = np.nan
    return pd.DataFrame({"Temp": temp, "Wind": wind, "Solar.R": solar, "month": month, "Ozone": ozone.round(1)})


def ozone_exports(folder: Path, n: int, seed: int) -> Path:
    """Ozone rises with temperature and sun, falls with wind, with noise; Solar.R is sometimes missing.
    Returns the use-case file (the same file for any seed: only the rows differ)."""
    folder.mkdir(parents=True, exist_ok=True)
    ozone_frame(n, seed).to_csv(folder / "airq.csv", index=False)
    path = folder / "usecase.yaml"
    path.write_text(OZONE_YAML)
    return path


def ozone_dataset(folder: Path, n: int, seed: int):
    """(use case, integrated dataset) of ``n`` generated rows."""
    from projects import get_use_case, load_dataset

    use_case = get_use_case(str(ozone_exports(folder, n, seed)))
    return use_case, load_dataset(use_case, use_case.generate_sources(None))


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON records, a missing value as null."""
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def router_and_ozone_endpoints(settings, small_requests, folder: Path, names: tuple[str, str], n: int, seed: int):
    """A 311 router (logreg on ``small_requests``) and an ozone regressor (linear on ``n`` days), trained and
    registered as ``names`` (challenger), and an endpoint for each, keyed by its name."""
    import registry
    from projects import get_use_case, train
    from serving import Endpoint

    router_name, ozone_name = names
    router = train(get_use_case("service_requests"), small_requests, "logreg", settings=settings)
    registry.register(router.model_uri, router_name, settings=settings)
    use_case, dataset = ozone_dataset(folder, n=n, seed=seed)
    ozone = train(use_case, dataset, "linear", settings=settings)
    registry.register(ozone.model_uri, ozone_name, settings=settings, tags=use_case.registry_tags)
    return [Endpoint(name, alias="challenger", settings=settings, refresh_seconds=0, key=name) for name in names]
