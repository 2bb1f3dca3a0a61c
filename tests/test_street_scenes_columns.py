"""The served street-scenes CNN answers from its model's columns (``predict_columns``), without a frame,
and says what its ``predict`` says (serving.runtime's columns path, checked at load); its network runs
through ctypes, without the GIL (projects/street_scenes/pyfunc.py), and answers as the binding does."""

from __future__ import annotations

import numpy as np
import pytest

from civicml.settings import Settings
from projects import get_use_case, load_dataset, train


@pytest.mark.slow
def test_served_cnn_answers_from_columns_as_its_predict_does(tmp_path):
    import orjson
    from fastapi.testclient import TestClient

    import registry
    from serving import Endpoint, create_app
    from serving.runtime import Answer

    use_case = get_use_case("street_scenes")
    dataset = load_dataset(use_case, use_case.generate_sources(tmp_path / "data", n=72, seed=5))
    settings = Settings.from_env(env={}, home=tmp_path / "home")
    result = train(use_case, dataset, "cnn", {"epochs": 1, "width": 16}, settings=settings, seed=0)
    registry.register(result.model_uri, "scenes-columns", alias="challenger", settings=settings)
    images = np.stack(dataset.X["image"].head(5).to_numpy()).astype(np.float32)
    endpoint = Endpoint("scenes-columns", alias="challenger", settings=settings, refresh_seconds=0,
                        key="scenes-columns")
    with TestClient(create_app(endpoint, follow=False)) as client:
        answer = client.post("/invocations", content=orjson.dumps({"instances": images.astype(float).tolist()}))
        assert answer.status_code == 200, answer.text
        runtime = endpoint.current.runtime
        while hasattr(runtime, "inner"):
            runtime = runtime.inner
        assert runtime._columns_fn is not None  # the columns path passed its check at load
        model = runtime._model
        assert model.unwrap_python_model().gil_released  # the network runs through ctypes, checked at load
        expected = model.predict(images)
        direct = runtime.predict(images)
        assert isinstance(direct, Answer) and list(direct) == list(expected.columns)
        assert direct["label"].tolist() == expected["label"].tolist()
        for name in expected.columns[1:]:
            assert direct[name].dtype == np.float64
            assert direct[name].tolist() == expected[name].tolist()  # the same numbers, not close ones
        served = answer.json()["predictions"]
        assert [p["label"] for p in served] == expected["label"].tolist()
        for p, (_, row) in zip(served, expected.iterrows()):
            assert [p[name] for name in expected.columns[1:]] == row.iloc[1:].tolist()
    empty = model.predict(np.zeros((0, 3, 32, 32), np.float32))
    assert list(empty.columns) == list(expected.columns) and len(empty) == 0
