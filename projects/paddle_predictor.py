"""A bounded, thread-safe pool of ``paddle.inference`` predictors, shipped with Paddle models.

Logged models carry this file through MLflow's ``code_paths``, so their ``pyfunc.py`` imports it as
``paddle_predictor`` when loaded anywhere (``mlflow models serve``, ``civicml serve``, a notebook);
it imports only NumPy and Paddle.

A Paddle predictor shared across threads crashes (``EnforceNotMet`` in matmul, then SIGABRT), and
one predictor cloned per calling thread on first use made the first burst of concurrent requests
slow (every thread built its own) and memory grow with the thread pool. Here a fixed number of
clones is made at load, each call borrows one and gives it back, and callers beyond the pool wait
for a free predictor instead of building more.
"""

from __future__ import annotations

import os
import queue
from pathlib import Path

import numpy as np

DEFAULT_SIZE = max(1, min(4, (os.cpu_count() or 2) // 2))


class PredictorPool:
    """``size`` predictors of one exported program; :meth:`run` is safe from any number of threads."""

    def __init__(self, folder: Path | str, size: int | None = None):
        from paddle import inference

        folder = Path(folder)
        config = inference.Config(str(folder / "inference.json"), str(folder / "inference.pdiparams"))
        config.disable_glog_info()
        first = inference.create_predictor(config)
        self.size = max(1, int(size or os.environ.get("CIVICML_PADDLE_PREDICTORS") or DEFAULT_SIZE))
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._free.put(first)
        for _ in range(self.size - 1):
            self._free.put(first.clone())  # clones share the weights: cheap in memory

    def run(self, batch: np.ndarray) -> np.ndarray:
        predictor = self._free.get()  # blocks while all predictors are busy
        try:
            handle = predictor.get_input_handle(predictor.get_input_names()[0])
            handle.reshape(list(batch.shape))
            handle.copy_from_cpu(np.ascontiguousarray(batch))
            predictor.run()
            return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
        finally:
            self._free.put(predictor)

    def warm_up(self, batch: np.ndarray) -> None:
        """Run every predictor once (oneDNN kernels are built on first use), before the model serves."""
        held = [self._free.get() for _ in range(self.size)]
        try:
            for predictor in held:
                handle = predictor.get_input_handle(predictor.get_input_names()[0])
                handle.reshape(list(batch.shape))
                handle.copy_from_cpu(np.ascontiguousarray(batch))
                predictor.run()
        finally:
            for predictor in held:
                self._free.put(predictor)
