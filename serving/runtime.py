"""Model runtimes: an object that loads a model, predicts, and unloads.

A serving variant (fp32, int8, pruned, onnx, ...) is a runtime chosen by name
through :func:`get_runtime`; new variants plug in with :func:`register_runtime`,
and third-party packages through the Python entry point group ``civicml.runtimes``
(``name = "package.module:Factory"``, a callable taking a :class:`registry.LocalModel`).
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from civicml.answers import Answer, probability_columns
from civicml.errors import InvalidInput, NotFound
from registry import LocalModel

log = logging.getLogger("civicml.serving")


class Runtime(abc.ABC):
    """Loads one model version and predicts with it."""

    name: str = "runtime"
    thread_safe: bool = True  # if False, the endpoint serializes calls to predict

    def __init__(self, model: LocalModel):
        self.model = model
        self.signature = None

    @abc.abstractmethod
    def load(self) -> None: ...

    @abc.abstractmethod
    def predict(self, data: Any, params: dict | None = None) -> Any: ...

    def unload(self) -> None:
        return None

    # A runtime that takes checked columns (serving.batching.Columns) without a DataFrame says so;
    # the batcher then merges requests' columns and hands them over as they are.
    accepts_columns: bool = False

    def verify(self, sample: Any) -> None:
        """Called at load with the model's input example (checked Columns or array): a runtime with a
        faster path compares it with the model's own path here and drops it if they differ."""
        return None

    @property
    def metadata(self) -> dict:
        return self.model.metadata

    # -- one request as the data plane hands it over (checked Columns, a frame or an array) ------------
    def predict_request(self, data: Any, params: dict | None = None) -> Any:
        """Answer one request's checked input: as the model's input (a frame, or Columns if the runtime takes
        them). A runtime that merges requests itself (:class:`serving.batching.BatchingRuntime`) takes it as is."""
        from serving.batching import merge

        return self.predict(merge([data], self.accepts_columns), params)

    async def asubmit(self, data: Any, params: dict | None = None, deadline: float | None = None,
                      costs: Any = None) -> Any:
        """:meth:`predict_request` off the event loop, in a worker thread. ``deadline`` (``time.monotonic()``):
        a request still waiting for a thread then is refused with :class:`serving.batching.Overloaded` (503);
        ``costs``: its rows' costs (:func:`serving.batching.row_costs`), for a runtime that schedules by cost."""
        from starlette.concurrency import run_in_threadpool

        def call():
            if deadline is not None and time.monotonic() > deadline:
                from serving.batching import Overloaded

                raise Overloaded("the server is busy: this request's time budget passed before the model "
                                 "could take it (retry later)")
            return self.predict_request(data, params)

        return await run_in_threadpool(call)


class PyfuncRuntime(Runtime):
    """The model as MLflow saved it (its own precision), through ``mlflow.pyfunc``."""

    name = "pyfunc"

    def load(self) -> None:
        import mlflow.pyfunc

        self._model = mlflow.pyfunc.load_model(str(self.model.path))
        self.signature = self._model.metadata.signature
        # The data plane has already checked and cast the input against the signature; for a
        # scikit-learn model, calling it directly skips pyfunc's second schema pass (~1 ms a request).
        flavor = self._model.metadata.flavors.get("python_function", {})
        self._direct = self._proba = self._fast = None
        self._unchecked = None  # the model's own predict without pyfunc's schema pass; checked in verify()
        self._columns_fn = None  # a Python model's predict_columns (its answer without a frame); checked in verify()
        self.accepts_columns = False
        if flavor.get("loader_module") == "mlflow.sklearn" and flavor.get("predict_fn", "predict") == "predict":
            from serving.sklearn_fast import compile_pipeline, linear_proba

            raw = self._model.get_raw_model()
            self._direct = raw.predict
            self._raw = raw
            self._fast = compile_pipeline(raw)  # checked against the pipeline in verify() before use
            self._fast_proba = linear_proba(raw.steps[-1][1]) if self._fast is not None else None
            labels = self.metadata.get("labels")
            classes = [str(c) for c in getattr(raw, "classes_", [])]
            # a decision threshold chosen at training (binary, imbalanced): the label is the model's own
            # predict, which applies it; the probabilities are still the classifier's
            self._thresholded = self.metadata.get("decision_threshold") is not None
            if hasattr(raw, "predict_proba") and labels and sorted(classes) == sorted(labels):
                self._order = [classes.index(label) for label in labels]
                self._proba = True
                self._labels = np.asarray(labels, dtype=object)
                self._columns = probability_columns(labels)

    def verify(self, sample) -> None:
        from serving.batching import Columns

        if self._direct is None:
            self._verify_unchecked(sample.frame() if isinstance(sample, Columns) else sample)
        if self._fast is None or not isinstance(sample, Columns):
            return
        final = self._raw.steps[-1][1]
        try:
            X = self._fast(sample.values)
            if hasattr(final, "predict_proba"):
                expected = self._raw.predict_proba(sample.frame())
                ok = np.allclose(final.predict_proba(X), expected, rtol=0, atol=1e-9)
                if ok and self._fast_proba is not None and not np.allclose(self._fast_proba(X), expected, rtol=0,
                                                                           atol=1e-9):
                    self._fast_proba = None
            else:
                ok = (final.predict(X) == self._raw.predict(sample.frame())).all()
        except Exception as err:
            log.warning("compiled feature path failed its check (%s); using the pipeline", err)
            ok = False
        self._fast = self._fast if ok else None
        self.accepts_columns = bool(ok)

    def _verify_unchecked(self, sample) -> None:
        """Other flavors (Paddle, Python models): the data plane has already checked and cast the input
        against the signature, so pyfunc's second schema pass (per-column pandas work, about 6 ms a call
        for the traffic MLP) is skipped, if the model's own predict gives the same answer without it on
        the input example (at load, once alone and once as a batch)."""
        model = self._model
        predict = getattr(model, "_predict_fn", None)
        if predict is None or model.metadata._is_signature_from_type_hint():
            return
        try:
            for data in (sample, _repeat(sample, 3)):
                if not _same(predict(data), model.predict(data)):
                    log.info("the model's own predict differs without the schema pass; keeping pyfunc's")
                    return
        except Exception as err:
            log.info("the model's own predict failed without the schema pass (%s); keeping pyfunc's", err)
            return
        self._unchecked = predict
        self._columns_fn = _columns_path(model, sample)

    def _features(self, data):
        """(pipeline-like object, its input): the compiled path for Columns, else the pipeline on a frame."""
        from serving.batching import Columns

        if isinstance(data, Columns):
            if self._fast is not None and self.accepts_columns:
                return self._raw.steps[-1][1], self._fast(data.values), self._fast_proba
            data = data.frame()
        return self._raw, data, None

    def predict(self, data, params=None):
        from serving.batching import Columns

        # A scikit-learn pipeline takes no params (MLflow's sklearn flavor ignores them too): the answer's
        # shape never depends on them. Params reach only other flavors' models, which declare them.
        if self._proba is not None:
            # One stable answer for classifiers (the MiniLM router's shape): label + p_<class>, with the
            # label as the most probable class, from one pass through the pipeline.
            model, X, fast_proba = self._features(data)
            proba = (fast_proba(X) if fast_proba is not None else model.predict_proba(X))[:, self._order]
            if self._thresholded:
                answer = Answer(label=np.asarray(model.predict(X)).astype(str).astype(object))
            else:
                answer = Answer(label=self._labels[proba.argmax(axis=1)])
            for j, column in enumerate(self._columns):
                answer[column] = proba[:, j]
            return answer
        if self._direct is not None:
            model, X, _ = self._features(data)
            return model.predict(X)
        if isinstance(data, Columns):
            data = data.frame()
        if self._columns_fn is not None and not params:
            return Answer(self._columns_fn(data))
        if self._unchecked is not None and not params:
            return labelled_columns(self._unchecked(data))
        return labelled_columns(self._model.predict(data, params=params) if params else self._model.predict(data))

    def unload(self) -> None:
        self._model = None


def labelled_columns(output: Any) -> Any:
    """A classifier's frame (a ``label`` column and its ``p_<class>`` columns) as an :class:`Answer` of the
    same columns (numpy arrays): the batcher splits it among its requests and each request's MLflow body is
    written from it about 15x faster than from a frame of its own (a frame's ``iloc`` slice and its
    ``to_dict`` were 0.6 ms of a street-scenes request). Any other output is returned as it is."""
    import pandas as pd

    if not isinstance(output, pd.DataFrame) or "label" not in output.columns or output.columns.duplicated().any():
        return output
    if any(output[name].dtype.kind not in "biuf" for name in output.columns if name != "label"):
        return output  # dates, text beside the label: their JSON is the frame's own
    return Answer({str(name): output[name].to_numpy() for name in output.columns})


def _columns_path(model, sample) -> Callable | None:
    """A Python model's ``predict_columns(input)`` (the Paddle street-scenes CNN's: its ``label`` and
    ``p_<class>`` arrays without the frame its ``predict`` builds from them, 0.35 ms a batch of 24 images),
    if it gives the same answer as its ``predict`` on the input example, alone and as a batch; else None."""
    try:
        columns = getattr(model.unwrap_python_model(), "predict_columns", None)
    except Exception:  # noqa: BLE001 - not a Python model
        return None
    if not callable(columns):
        return None
    try:
        for data in (sample, _repeat(sample, 3)):
            expected = labelled_columns(model.predict(data))
            if not isinstance(expected, Answer) or not _same(_as_frame(Answer(columns(data))), _as_frame(expected)):
                log.info("predict_columns differs from the model's predict; answering through predict")
                return None
    except Exception as err:  # noqa: BLE001 - the model's own predict answers instead
        log.info("predict_columns failed on the input example (%s); answering through predict", err)
        return None
    return columns


def _as_frame(columns: Answer):
    """An :class:`Answer`'s columns as a frame (compared by :func:`_same`)."""
    import pandas as pd

    return pd.DataFrame({name: np.asarray(values) for name, values in columns.items()})


def _repeat(sample, times: int):
    import pandas as pd

    if isinstance(sample, pd.DataFrame):
        return pd.concat([sample] * times, ignore_index=True)
    return np.concatenate([np.asarray(sample)] * times)


def _same(a, b) -> bool:
    """Two model outputs (DataFrame, Series, array, list) hold the same values (floats to 1e-9)."""
    import pandas as pd

    if isinstance(a, pd.DataFrame) or isinstance(b, pd.DataFrame):
        if not (isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame)) or list(a.columns) != list(b.columns):
            return False
        return all(_same(a[c].to_numpy(), b[c].to_numpy()) for c in a.columns)
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        return bool(np.allclose(a.astype(float), b.astype(float), rtol=0, atol=1e-9, equal_nan=True))
    return bool((a == b).all())


class WrappedRuntime(Runtime):
    """A runtime around another one (serializing, batching): it shows the inner runtime's model,
    signature, metadata and column handling, and loads, verifies and unloads through it."""

    def __init__(self, inner: Runtime):
        self.inner = inner
        self.name = inner.name

    @property
    def model(self):
        return self.inner.model

    @model.setter
    def model(self, value):
        pass

    @property
    def signature(self):
        return self.inner.signature

    @signature.setter
    def signature(self, value):
        pass

    @property
    def metadata(self) -> dict:
        return self.inner.metadata

    @property
    def accepts_columns(self):
        return self.inner.accepts_columns

    def load(self) -> None:
        self.inner.load()

    def verify(self, sample) -> None:
        self.inner.verify(sample)

    def unload(self) -> None:
        self.inner.unload()


class SerializedRuntime(WrappedRuntime):
    """Wraps a runtime that is not thread safe so that one call runs at a time."""

    def __init__(self, inner: Runtime):
        super().__init__(inner)
        self._lock = threading.Lock()

    def predict(self, data, params=None):
        with self._lock:
            return self.inner.predict(data, params)


def _onnx(model: LocalModel) -> Runtime:
    from serving.onnx_runtime import OnnxRuntime  # imported when chosen: onnxruntime is only needed then

    return OnnxRuntime(model)


_RUNTIMES: dict[str, Callable[[LocalModel], Runtime]] = {"pyfunc": PyfuncRuntime, "fp32": PyfuncRuntime,
                                                         "onnx": _onnx}


def register_runtime(name: str, factory: Callable[[LocalModel], Runtime]) -> None:
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise InvalidInput(f"invalid runtime name '{name}'")
    _RUNTIMES[name] = factory


ENTRY_POINT_GROUP = "civicml.runtimes"


def _plugins() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def runtime_names() -> list[str]:
    return sorted({*_RUNTIMES, *_plugins()})


def get_runtime(name: str, model: LocalModel) -> Runtime:
    factory = _RUNTIMES.get(name)
    if factory is None:
        plugin = _plugins().get(name)
        if plugin is None:
            raise NotFound(f"unknown runtime '{name}' (known: {', '.join(runtime_names())})")
        try:
            factory = plugin.load()
        except Exception as err:
            raise NotFound(f"runtime '{name}' ({plugin.value}) could not be imported: {err}") from None
    runtime = factory(model)
    return runtime if runtime.thread_safe else SerializedRuntime(runtime)
