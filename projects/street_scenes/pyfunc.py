"""Serving code of a street_scenes model (an MLflow *models-from-code* file).

MLflow copies this file into the logged model and runs it on
``mlflow.pyfunc.load_model``; it imports only NumPy, pandas, MLflow and Paddle,
never CivicML's training code, and unpickles nothing.

Artifacts: ``program/inference.json`` + ``inference.pdiparams`` (the exported
CNN, softmax included) and ``program/labels.json``. Input: float32
``[batch, 3, 32, 32]`` RGB in [0, 1] (an array, or a frame whose single column
holds one CHW array per row). Output: a frame with ``label`` and one ``p_<class>``
column per class.

Predictors come from ``paddle_predictor.PredictorPool`` (projects/paddle_predictor.py,
shipped with the model through ``code_paths``): a fixed pool made and warmed at load,
safe from any number of threads.

Paddle's Python binding of ``Predictor.run`` holds the GIL for the whole network (Paddle
releases it only for Ascend builds): while one batch ran (8-40 ms), a server's event loop could
neither read nor answer a request, so a server on 2 cores ran on one (measured: a thread
sleeping 0.5 ms woke after 21 ms while a predictor ran, 0.6 ms alone). :class:`_Pool` calls
the same C++ ``paddle_infer::Predictor::Run`` through ctypes, which lets go of the GIL, once it
has given the binding's output bit for bit on every predictor of the pool at load; where it
cannot (another Paddle build, another object layout) the binding runs as before.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

try:  # shipped with the model through code_paths
    from paddle_predictor import PredictorPool
except ImportError:  # run from the source tree (when the model is logged)
    from projects.paddle_predictor import PredictorPool


_RUN_SYMBOL = "_ZN12paddle_infer9Predictor3RunEv"  # bool paddle_infer::Predictor::Run(), exported by libpaddle


def _native_run():
    """``Predictor::Run`` as a ctypes function (called without the GIL), or None where it is not found."""
    try:
        from paddle.base import libpaddle

        run = getattr(ctypes.CDLL(libpaddle.__file__), _RUN_SYMBOL)
    except (ImportError, OSError, AttributeError):
        return None
    run.argtypes, run.restype = [ctypes.c_void_p], ctypes.c_bool
    return run


def _address(predictor) -> int | None:
    """The C++ ``Predictor*`` a pybind11 object holds: its value pointer, which its holder (a smart pointer,
    stored next to it in pybind11's simple layout) repeats; None unless both agree."""
    value = ctypes.c_void_p.from_address(id(predictor) + 16).value
    holder = ctypes.c_void_p.from_address(id(predictor) + 24).value
    return value if value and value == holder else None


class _Pool(PredictorPool):
    """The predictor pool whose network runs without the GIL, once checked (:meth:`release_gil`)."""

    _native = None
    _addresses: dict = {}

    def release_gil(self, sample: np.ndarray) -> bool:
        """Run ``sample`` on every predictor through the binding and through ctypes; use ctypes from now
        on if every output is the same array, bit for bit."""
        run, held = _native_run(), [self._free.get() for _ in range(self.size)]
        try:
            addresses = {id(p): _address(p) for p in held}
            if run is None or None in addresses.values():
                return False
            for predictor in held:
                if not np.array_equal(self._run(predictor, sample, None), self._run(predictor, sample, run,
                                                                                   addresses[id(predictor)])):
                    return False
            self._native, self._addresses = run, addresses
            return True
        finally:
            for predictor in held:
                self._free.put(predictor)

    @staticmethod
    def _run(predictor, batch: np.ndarray, native, address: int | None = None) -> np.ndarray:
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(list(batch.shape))
        handle.copy_from_cpu(np.ascontiguousarray(batch))
        if native is None:
            predictor.run()
        elif not native(address):
            raise RuntimeError("the Paddle predictor failed to run")
        return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._native is None:
            return super().run(batch)
        predictor = self._free.get()  # blocks while all predictors are busy
        try:
            return self._run(predictor, batch, self._native, self._addresses[id(predictor)])
        finally:
            self._free.put(predictor)


class StreetSceneClassifier(PythonModel):
    def load_context(self, context):
        folder = Path(context.artifacts["program"])
        spec = json.loads((folder / "labels.json").read_text())
        self.labels = np.asarray(spec["labels"], dtype=object)
        self.input_shape = tuple(spec["input_shape"])
        self.predictors = _Pool(folder)
        self.predictors.warm_up(np.zeros((1, *self.input_shape), dtype=np.float32))
        sample = np.random.default_rng(0).random((3, *self.input_shape), dtype=np.float32)
        self.gil_released = self.predictors.release_gil(sample)

    def _batch(self, model_input) -> np.ndarray:
        if isinstance(model_input, pd.DataFrame):
            column = model_input["image"] if "image" in model_input else model_input.iloc[:, 0]
            model_input = np.stack([np.asarray(v, dtype=np.float32) for v in column]) if len(column) else []
        batch = np.asarray(model_input, dtype=np.float32)
        if batch.ndim == len(self.input_shape):  # one image without a batch dimension
            batch = batch[None]
        if batch.shape[1:] != self.input_shape:
            raise ValueError(f"expected images of shape [batch, {', '.join(map(str, self.input_shape))}], "
                             f"got {list(batch.shape)}")
        return np.ascontiguousarray(batch)

    def predict_columns(self, model_input) -> dict:
        """The answer as plain columns: ``label`` (objects) and one float64 ``p_<class>`` array per class.
        :meth:`predict` is this as a frame; a server that writes its answers from columns (civicml serve)
        calls this and skips the frame (about 0.35 ms a batch of 24 images, built and read back)."""
        batch = self._batch(model_input)
        probs = self.predictors.run(batch) if len(batch) else np.zeros((0, len(self.labels)), np.float32)
        by_class = np.ascontiguousarray(probs.T, dtype=np.float64)
        columns = {"label": self.labels[probs.argmax(axis=1)] if len(probs) else np.zeros(0, dtype=object)}
        columns.update((f"p_{c}", by_class[j]) for j, c in enumerate(self.labels))
        return columns

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        columns = self.predict_columns(model_input)
        frame = pd.DataFrame({k: v for k, v in columns.items() if k != "label"})
        frame.insert(0, "label", columns["label"] if len(frame) else [])
        return frame


mlflow.models.set_model(StreetSceneClassifier())
