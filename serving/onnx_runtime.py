"""The ``onnx`` runtime: an ONNX Runtime variant called without pyfunc's second schema pass.

A registered ONNX variant (``registry.variants``) is an MLflow pyfunc whose
Python model wraps one ``onnxruntime.InferenceSession`` (thread-safe; at most two
intra-op threads, one inter-op thread). Through :class:`~serving.runtime.PyfuncRuntime`
it already serves; this runtime only skips what the data plane has done before it
(MLflow's schema enforcement, which costs more than the graph for one row of a
small model) by calling the wrapped model directly. Any other model falls back to
the plain pyfunc path, so choosing ``onnx`` is never wrong, only sometimes not faster.

The variant takes a frame (it never takes checked columns directly: ``accepts_columns`` stays
False), and answers as :class:`~serving.runtime.PyfuncRuntime` answers for its parent: a classifier
with ``labels`` in its metadata answers ``label`` and ``p_<class>`` columns (an
:class:`~civicml.answers.Answer`). A scikit-learn graph gives those from its ``probabilities``
output, whose columns follow scikit-learn's ``classes_`` (sorted); a graph whose most probable class
ever disagrees with its own ``label`` output answers labels only, as the variant itself does.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from civicml.answers import Answer, probability_columns
from serving.runtime import PyfuncRuntime

log = logging.getLogger("civicml.serving")


class OnnxRuntime(PyfuncRuntime):
    name = "onnx"
    thread_safe = True  # one InferenceSession serves every thread

    def load(self) -> None:
        super().load()
        self._variant = None
        if self._direct is not None:  # a scikit-learn parent: PyfuncRuntime's own fast path
            return
        try:
            inner = self._model.unwrap_python_model()
        except Exception:  # noqa: BLE001 - not a Python model (a Paddle flavor, ...): plain pyfunc
            return
        if all(hasattr(inner, a) for a in ("session", "spec", "feeds")):  # ort_pyfunc.OnnxVariant, duck-typed
            self._variant = inner
            labels = [str(label) for label in self.metadata.get("labels") or []]
            if inner.spec.get("input") == "columns" and labels and "probabilities" in inner.outputs:
                self._labels = np.asarray(labels, dtype=object)
                self._columns = probability_columns(labels)
                self._order = [sorted(labels).index(label) for label in labels]
                self._proba = True

    @property
    def direct(self) -> bool:
        """Whether predictions bypass pyfunc (the model is an ONNX Runtime variant)."""
        return self._variant is not None

    def verify(self, sample) -> None:
        if self._variant is None:
            super().verify(sample)

    def predict(self, data, params=None):
        if self._variant is None or params:
            return super().predict(data, params)
        from serving.batching import Columns

        if isinstance(data, Columns):
            data = data.frame()
        if self._proba is None:
            answer = self._variant.predict(None, data)
        else:
            feeds = self._variant.feeds(data)
            label, proba = self._variant.session.run([self._variant.spec.get("output", "label"), "probabilities"],
                                                     feeds)
            proba = np.asarray(proba, dtype=np.float64)[:, self._order]
            label = label.reshape(-1)
            if len(label) and not (self._labels[proba.argmax(axis=1)] == label.astype(str)).all():
                log.warning("the ONNX graph's probabilities disagree with its labels; answering labels only")
                self._proba = None
                return label
            answer = Answer(label=self._labels[proba.argmax(axis=1)] if len(label) else self._labels[:0])
            for j, column in enumerate(self._columns):
                answer[column] = proba[:, j]
            return answer
        if isinstance(answer, pd.DataFrame) and "label" in answer.columns:
            return Answer({name: answer[name].to_numpy() for name in answer.columns})
        return answer


__all__ = ["OnnxRuntime"]
