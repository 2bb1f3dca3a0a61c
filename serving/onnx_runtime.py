"""The ``onnx`` runtime: an ONNX Runtime variant called without pyfunc's second schema pass.

A registered ONNX variant (``registry.variants``) is an MLflow pyfunc whose
Python model wraps one ``onnxruntime.InferenceSession`` (thread-safe; at most two
intra-op threads, one inter-op thread). Through :class:`~serving.runtime.PyfuncRuntime`
it already serves; this runtime only skips what the data plane has done before it
(MLflow's schema enforcement, which costs more than the graph for one row of a
small model) by calling the wrapped model directly. Any other model falls back to
the plain pyfunc path, so choosing ``onnx`` is never wrong, only sometimes not faster.
"""

from __future__ import annotations

from serving.runtime import PyfuncRuntime


class OnnxRuntime(PyfuncRuntime):
    name = "onnx"
    thread_safe = True  # one InferenceSession serves every thread

    def load(self) -> None:
        super().load()
        try:
            inner = self._model.unwrap_python_model()
        except Exception:  # noqa: BLE001 - not a Python model (a scikit-learn or Paddle flavor): plain pyfunc
            return
        if hasattr(inner, "session") and hasattr(inner, "spec"):  # ort_pyfunc.OnnxVariant, duck-typed
            self._direct = lambda data: inner.predict(None, data)

    @property
    def direct(self) -> bool:
        """Whether predictions bypass pyfunc (the model is an ONNX Runtime variant)."""
        return self._direct is not None


__all__ = ["OnnxRuntime"]
