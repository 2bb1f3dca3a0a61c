"""One contract, every runtime: the same tests run over each way a registered version can be served.

In the manner of Optuna's storage tests (``optuna/testing/pytest_storages.py``): a runtime is anything
:func:`serving.get_runtime` can hand the endpoint, and each must load, answer one row and many rows as
pyfunc does, show the version's metadata, answer through ``asubmit`` on the event loop, unload and load
again, and have a signature from which the data plane refuses bad input with CivicML's input error.

The runtimes: pyfunc (the model as MLflow saved it, answered from a frame), pyfunc's compiled scikit-learn
feature path (``serving/sklearn_fast.py``, taken after ``verify`` agrees with the pipeline), the ONNX variant
(``serving/onnx_runtime.py``), adaptive batching around pyfunc, and a third-party runtime registered through
:func:`serving.register_runtime` (not thread safe, so ``get_runtime`` serializes it).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pandas as pd
import pytest

import registry
from civicml.errors import InvalidInput
from civicml.settings import Settings
from projects import train
from registry import resolve
from registry.variants import VariantPolicy, compress
from serving import Endpoint, EndpointOptions, Runtime, get_runtime, register_runtime
from serving.batching import BatchingRuntime, Overloaded
from serving.dataplane import Validator
from serving.endpoint import checked_params

NAME = "runtime-contract"
ROW = {"description": "Huge pothole on Oak Avenue", "district": "Midtown", "channel": "app", "hour": 8,
       "weekday": 1}
PLUGIN = "contract-sklearn"


class SklearnPlugin(Runtime):
    """A runtime as a third party writes one: the scikit-learn model itself, label and p_<class> columns in
    the order of the version's labels. Declared not thread safe, as a Paddle predictor is."""

    name = PLUGIN
    thread_safe = False

    def load(self) -> None:
        import mlflow.sklearn
        from mlflow.models import Model

        self._model = mlflow.sklearn.load_model(str(self.model.path))
        self.signature = Model.load(str(self.model.path)).signature

    def predict(self, data, params=None):
        labels = [str(label) for label in self.metadata["labels"]]
        classes = [str(c) for c in self._model.classes_]
        proba = self._model.predict_proba(data)[:, [classes.index(label) for label in labels]]
        answer = {"label": np.asarray(labels, dtype=object)[proba.argmax(axis=1)]}
        answer.update({f"p_{label}": proba[:, j] for j, label in enumerate(labels)})
        return answer

    def unload(self) -> None:
        self._model = None


@pytest.fixture(scope="module")
def store(tmp_path_factory, requests_use_case, small_requests, requests_holdout):
    """A 311 logreg (v1) and its ONNX variant (v2), registered in a home of their own: (settings, v1, v2)."""
    settings = Settings.from_env(env={}, home=tmp_path_factory.mktemp("contract") / "home", user="tester")
    result = train(requests_use_case, small_requests, "logreg", {"char_ngrams": False}, settings=settings)
    parent = registry.register(result.model_uri, NAME, settings=settings)
    variant = compress(NAME, parent.version, "onnx", settings, holdout=requests_holdout, repeats={1: 2, 64: 1},
                       policy=VariantPolicy())
    assert variant.passed, variant.reason
    register_runtime(PLUGIN, SklearnPlugin)
    return settings, parent.version, variant.version.version


@pytest.fixture(scope="module")
def versions(store):
    """The local, verified copies of v1 and its variant."""
    settings, parent, variant = store
    return resolve(NAME, parent, settings=settings), resolve(NAME, variant, settings=settings)


def _example(local):
    from mlflow.models import Model

    return Model.load(str(local.path)).load_input_example(str(local.path))


def _open(kind: str, versions) -> Runtime:
    """The runtime ``kind``, loaded and verified on the version's input example as an endpoint does."""
    parent, variant = versions
    if kind == "onnx":
        runtime = get_runtime("onnx", variant)
    elif kind == "plugin":
        runtime = get_runtime(PLUGIN, parent)
    else:
        runtime = get_runtime("pyfunc", parent)
    if kind == "pyfunc, batched":
        runtime = BatchingRuntime(runtime, max_batch=16, max_wait_ms=1.0)
    runtime.load()
    _verify(kind, runtime)
    return runtime


def _verify(kind: str, runtime: Runtime) -> None:
    if kind != "pyfunc":  # plain pyfunc: the frame path, the reference the others are held to
        runtime.verify(Validator(runtime.signature, runtime.metadata).prepare(_example(runtime.model)).data)


KINDS = ["pyfunc", "compiled", "onnx", "pyfunc, batched", "plugin"]
TOLERANCE = {"onnx": 5e-3}  # a float32 graph (its own text features); the others compute in float64 as pyfunc


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def runtime(kind, versions):
    runtime = _open(kind, versions)
    yield runtime
    runtime.unload()


@pytest.fixture(scope="module")
def pyfunc(versions):
    runtime = _open("pyfunc", versions)
    yield runtime
    runtime.unload()


@pytest.fixture(scope="module")
def rows(requests_holdout) -> pd.DataFrame:
    return requests_holdout.frame[list(requests_holdout.features)].head(64).reset_index(drop=True)


def _checked(runtime: Runtime, frame: pd.DataFrame):
    """What the data plane hands a runtime: the rows checked against its own signature and metadata."""
    return Validator(runtime.signature, runtime.metadata).prepare(frame).data


def _columns(output) -> dict[str, list]:
    if isinstance(output, pd.DataFrame):
        return {name: output[name].tolist() for name in output.columns}
    assert isinstance(output, dict), f"a classifier answers label and p_<class> columns, not {type(output)}"
    return {name: np.asarray(values).tolist() for name, values in output.items()}


def _same_answers(got, want, tolerance: float) -> None:
    got, want = _columns(got), _columns(want)
    assert list(got) == list(want)  # label first, then p_<class> in the version's label order
    assert got["label"] == want["label"]
    for name in want:
        if name != "label":
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=tolerance, err_msg=name)


def test_loads_with_a_signature_and_the_versions_metadata(kind, runtime, pyfunc):
    assert isinstance(runtime.name, str) and runtime.name
    assert runtime.signature is not None and runtime.signature.inputs is not None
    assert runtime.metadata["task"] == "classification"
    assert runtime.metadata["labels"] == pyfunc.metadata["labels"] and len(runtime.metadata["labels"]) > 1
    if kind == "compiled":  # the compiled feature path agreed with the pipeline and is taken
        assert runtime.accepts_columns
    if kind == "onnx":  # the graph itself answers, not its parent's pipeline
        assert runtime.direct


@pytest.mark.parametrize("n", [1, 64])
def test_answers_one_row_and_many_as_pyfunc(kind, runtime, pyfunc, rows, n):
    frame = rows.head(n)
    want = pyfunc.predict(frame)
    got = runtime.predict_request(_checked(runtime, frame))
    assert len(_columns(got)["label"]) == n
    _same_answers(got, want, TOLERANCE.get(kind, 1e-9))


def test_async_submit_answers_as_predict_and_refuses_a_passed_deadline(runtime, rows):
    data = _checked(runtime, rows.head(5))

    async def run():
        answered = await asyncio.gather(*(runtime.asubmit(data) for _ in range(3)))
        with pytest.raises(Overloaded, match="time budget passed"):
            await runtime.asubmit(data, deadline=time.monotonic() - 1)
        return answered

    for answer in asyncio.run(run()):
        _same_answers(answer, runtime.predict_request(data), 0)


def test_bad_input_is_refused_with_civicmls_input_error(runtime):
    validator = Validator(runtime.signature, runtime.metadata)
    for bad, fragment in [({k: v for k, v in ROW.items() if k != "district"}, "missing column 'district'"),
                          ({**ROW, "hour": "eight"}, "column 'hour' must be numeric"),
                          ({**ROW, "district": "Atlantis"}, "unknown district 'Atlantis'")]:
        with pytest.raises(InvalidInput, match=fragment):
            validator.prepare(pd.DataFrame([bad]))
    with pytest.raises(InvalidInput, match="unknown params"):
        checked_params(runtime, {"temperature": 0.5})


def test_unloads_twice_and_loads_again_with_the_same_answers(kind, runtime, rows):
    data = _checked(runtime, rows.head(8))
    before = runtime.predict_request(data)
    runtime.unload()
    runtime.unload()  # closing is idempotent: an endpoint's swap and its close may both unload
    runtime.load()
    _verify(kind, runtime)
    _same_answers(runtime.predict_request(_checked(runtime, rows.head(8))), before, 0)


# -- the endpoint's choice of runtime: None is "not chosen", a name (pyfunc too) is chosen ----------------------
def test_an_endpoint_serves_the_runtime_it_is_given_else_the_variants_own(store):
    settings, parent, variant = store

    def served(options=None, **fields):
        endpoint = Endpoint(NAME, alias=parent, settings=settings, options=options, batching=False, **fields)
        try:
            return endpoint.load()
        finally:
            endpoint.close()

    plain = served()
    assert (plain.version, plain.runtime, plain.variant) == (parent, "pyfunc", None)
    assert (served(variant="onnx").version, served(variant="onnx").runtime) == (variant, "onnx")  # its own
    chosen = served(EndpointOptions(variant="onnx", runtime="pyfunc"))
    assert (chosen.version, chosen.runtime, chosen.variant) == (variant, "pyfunc", "onnx")  # pyfunc, explicitly
    assert served(EndpointOptions(variant="onnx", runtime="pyfunc"), runtime=None).runtime == "onnx"
    with pytest.raises(TypeError, match="refresh"):
        Endpoint(NAME, settings=settings, refresh=0)  # a misspelt option is no silent default
