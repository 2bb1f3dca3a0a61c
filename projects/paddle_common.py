"""What the Paddle use cases (``street_scenes``, ``traffic_flow``) share when they train.

* :func:`seed_everything` – one seed for Paddle's generator and the NumPy one
  that shuffles and augments, so that a fit is repeatable on CPU.
* :func:`fit_epochs` – the epoch loop: train one epoch, score the validation
  set, report the score (the reporter may raise :class:`~projects.base.Pruned`;
  it propagates), stop early after ``patience`` epochs without improvement, and
  put the best epoch's weights back.
* :func:`export_program` – ``paddle.jit.save`` with a dynamic batch dimension.
* :func:`log_program_pyfunc` – log an exported program as an ``mlflow.pyfunc``
  *models-from-code* model: the loader file travels with the model, no pickle is
  involved, and nothing from ``projects`` is needed to load it.

Serving needs none of this module: each use case's ``pyfunc.py`` is the whole
serving code of its model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import paddle

from projects.base import Dataset, Reporter


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Paddle (weights, dropout) and return a NumPy generator for shuffling and augmentation."""
    paddle.seed(int(seed))
    return np.random.default_rng(int(seed))


def fit_seed(params: Mapping[str, Any], train: Dataset) -> int:
    """The seed of a fit: ``params["seed"]`` if given, else derived from the training rows.

    ``ModelFamily.fit`` is not handed the seed of ``projects.train``; the training
    split depends on that seed, so deriving the seed from the split's fingerprint
    keeps a fit repeatable for a given ``train(seed=...)``.
    """
    if params.get("seed") is not None:
        return int(params["seed"])
    return int(train.fingerprint[:8] or "0", 16) % (2 ** 31)


def minibatches(n: int, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index arrays of ``batch_size`` (the last one may be smaller); shuffled when ``rng`` is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


class EarlyStopping:
    """Tracks the best validation value; ``stop`` turns true after ``patience`` epochs without improvement."""

    def __init__(self, patience: int, direction: str = "maximize", min_delta: float = 0.0):
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        self.patience = int(patience)
        self.sign = 1.0 if direction == "maximize" else -1.0
        self.min_delta = float(min_delta)
        self.best_value = -math.inf if direction == "maximize" else math.inf
        self.best_epoch = 0
        self.waited = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record ``value``; return True if it is the best so far."""
        if not math.isfinite(value):
            self.waited += 1
            return False
        if self.best_epoch == 0 or self.sign * (value - self.best_value) > self.min_delta:
            self.best_value, self.best_epoch, self.waited = float(value), int(epoch), 0
            return True
        self.waited += 1
        return False

    @property
    def stop(self) -> bool:
        return self.waited >= self.patience


@dataclass
class LoopResult:
    best_epoch: int
    best_value: float
    epochs_run: int
    stopped_early: bool
    history: list[tuple[int, float]] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0


def fit_epochs(
    model: paddle.nn.Layer,
    run_epoch: Callable[[int], float],
    evaluate: Callable[[], float],
    reporter: Reporter,
    *,
    epochs: int,
    patience: int,
    direction: str,
) -> LoopResult:
    """Train ``model`` epoch by epoch; keep the weights of the best validation epoch.

    ``run_epoch(epoch)`` trains one epoch (the model is in train mode) and returns
    its mean loss; ``evaluate()`` scores the validation set (the model is in eval
    mode). Each score goes to ``reporter.report(epoch, score)``, which may raise
    :class:`~projects.base.Pruned`.
    """
    started = time.perf_counter()
    stopper = EarlyStopping(patience, direction)
    best_state: dict[str, np.ndarray] | None = None
    history: list[tuple[int, float]] = []
    losses: list[float] = []
    epoch = 0
    for epoch in range(1, int(epochs) + 1):
        model.train()
        losses.append(float(run_epoch(epoch)))
        model.eval()
        with paddle.no_grad():
            value = float(evaluate())
        history.append((epoch, value))
        reporter.report(epoch, value)
        if stopper.update(epoch, value):
            best_state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        if stopper.stop:
            break
    if best_state is not None:
        model.set_state_dict({k: paddle.to_tensor(v) for k, v in best_state.items()})
    model.eval()
    return LoopResult(stopper.best_epoch, stopper.best_value, epoch, epoch < int(epochs), history, losses,
                      time.perf_counter() - started)


def parameter_count(model: paddle.nn.Layer) -> int:
    return int(sum(int(np.prod(p.shape)) for p in model.parameters()))


def parameter_bytes(model: paddle.nn.Layer) -> int:
    """Bytes of the weights and buffers (batch-norm statistics) as stored."""
    return int(sum(v.numpy().nbytes for v in model.state_dict().values()))


def export_program(layer: paddle.nn.Layer, folder: Path, input_shape: Sequence[int | None], input_name: str) -> Path:
    """``paddle.jit.save`` ``layer`` to ``folder/inference.*`` with a dynamic batch dimension.

    ``input_name`` must be the name of ``layer.forward``'s argument. Returns ``folder``.
    """
    from paddle.static import InputSpec

    folder.mkdir(parents=True, exist_ok=True)
    layer.eval()
    spec = InputSpec(list(input_shape), "float32", name=input_name)
    paddle.jit.save(layer, str(folder / "inference"), input_spec=[spec])
    return folder


def _requirements() -> list[str]:
    pins = []
    for dist in ("mlflow", "paddlepaddle", "numpy", "pandas"):
        try:
            pins.append(f"{dist}=={importlib_metadata.version(dist)}")
        except importlib_metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


def log_program_pyfunc(
    name: str,
    code_file: Path,
    program_dir: Path,
    *,
    signature,
    input_example,
    metadata: Mapping[str, Any],
    requirements: Sequence[str] | None = None,
) -> str:
    """Log ``program_dir`` (an exported program plus its JSON) as a models-from-code pyfunc; return its URI.

    ``code_file`` is the use case's ``pyfunc.py``; it is copied into the model and
    is the only code needed to load it. Requirements are pinned explicitly (``requirements``, default
    mlflow, paddlepaddle, numpy and pandas at their installed versions), which
    also spares MLflow from loading the model in a subprocess to infer them.
    """
    import mlflow

    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=str(code_file),
        code_paths=[str(Path(__file__).with_name("paddle_predictor.py"))],  # the shared predictor pool
        artifacts={"program": str(program_dir)},
        signature=signature,
        input_example=input_example,
        metadata=dict(metadata),
        pip_requirements=list(requirements) if requirements else _requirements(),
    )
    return info.model_uri
