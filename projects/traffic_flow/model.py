"""The ``mlp`` family of traffic_flow: a Paddle MLP that forecasts next hour's count.

The network takes the feature columns as they are (raw counts, time encodings,
weather) and carries its own preprocessing as fixed buffers, so the exported
program needs no scaler next to it:

* count features -> ``log1p(x) - log1p(mean_24)``: the shape of recent
  traffic relative to the sensor's own level, so one network serves quiet and
  busy roads alike;
* the level ``log1p(mean_24)`` and the context features are standardized with
  the training set's mean and standard deviation;
* an MLP (``layers`` x [linear(hidden), GELU, dropout]) outputs ``r`` and the
  forecast is ``expm1(log1p(mean_24) + r)``, never negative.

Training minimizes the mean absolute error (scaled by the mean count) with
AdamW and a cosine learning-rate decay; validation MAE is reported every epoch
(a tuner may prune), training stops after ``patience`` epochs without
improvement and keeps the best epoch.
After the fit, a plot of one validation week (forecast, actual, and the
same-hour-last-week baseline) and the seasonal baselines' MAE go to the active
MLflow run.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Mapping

import mlflow
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pandas as pd

from projects.base import Dataset, FittedModel, ModelFamily, Reporter
from projects.paddle_common import (export_program, fit_epochs, fit_seed, log_program_pyfunc, minibatches,
                                    parameter_bytes, parameter_count, seed_everything)
from projects.space import Categorical, Float, Int
from projects.traffic_flow.integrate import CONTEXT_FEATURES, COUNT_FEATURES, FEATURES, TARGET

PYFUNC_FILE = Path(__file__).with_name("pyfunc.py")
_K = len(COUNT_FEATURES)  # count features come first; the last of them is mean_24, the level


class FlowNet(nn.Layer):
    """Next-hour counts ``[N]`` from the feature matrix ``[N, len(FEATURES)]`` (column order of FEATURES)."""

    def __init__(self, stats: Mapping[str, np.ndarray], hidden: int = 128, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        for name in ("context_mean", "context_std", "level_mean", "level_std"):
            self.register_buffer(name, paddle.to_tensor(np.asarray(stats[name], dtype=np.float32)))
        blocks, width = [], _K + 1 + len(CONTEXT_FEATURES)
        for _ in range(int(layers)):
            blocks += [nn.Linear(width, int(hidden)), nn.GELU(), nn.Dropout(float(dropout))]
            width = int(hidden)
        blocks.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*blocks)

    def forward(self, features):
        counts = paddle.clip(features[:, :_K], min=0.0)
        context = features[:, _K:]
        level = paddle.log1p(counts[:, _K - 1:_K])
        shape = paddle.log1p(counts) - level
        inputs = paddle.concat([shape, (level - self.level_mean) / self.level_std,
                                (context - self.context_mean) / self.context_std], axis=1)
        out = paddle.expm1(level + self.mlp(inputs))
        return paddle.clip(out, min=0.0).squeeze(-1)


def matrix_of(X: pd.DataFrame) -> np.ndarray:
    return np.ascontiguousarray(X[list(FEATURES)].to_numpy(dtype=np.float32))


def _stats(x: np.ndarray) -> dict[str, np.ndarray]:
    level = np.log1p(np.clip(x[:, _K - 1], 0, None))
    context = x[:, _K:]
    return {"context_mean": context.mean(axis=0), "context_std": np.maximum(context.std(axis=0), 1e-3),
            "level_mean": np.array([level.mean()]), "level_std": np.array([max(level.std(), 1e-3)])}


def _forecast(net: FlowNet, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    net.eval()
    with paddle.no_grad():
        parts = [net(paddle.to_tensor(x[s:s + batch_size])).numpy() for s in range(0, len(x), batch_size)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def week_figure(valid: Dataset, forecast: np.ndarray):
    """Forecast vs actual (and the last-week baseline) over the first week of validation of the busiest sensor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = valid.frame.assign(forecast=forecast)
    sensor = frame.groupby("sensor_id")[TARGET].mean().idxmax()
    part = frame[frame["sensor_id"] == sensor].sort_values("timestamp")
    part = part[part["timestamp"] < part["timestamp"].iloc[0] + pd.Timedelta(days=7)]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot(part["timestamp"], part[TARGET], label="actual", color="black", linewidth=1.2)
    ax.plot(part["timestamp"], part["forecast"], label="forecast (next hour)", color="tab:blue", linewidth=1.0)
    ax.plot(part["timestamp"], part["lag_168"], label="same hour last week", color="tab:orange", linewidth=0.8,
            alpha=0.7, linestyle="--")
    ax.set_title(f"traffic_flow: sensor {sensor}, one validation week")
    ax.set_ylabel("vehicles per hour")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def seasonal_baselines(frame: pd.DataFrame) -> dict[str, float]:
    """MAE of the naive seasonal forecasts: same hour last week, same hour yesterday."""
    y = frame[TARGET].to_numpy(float)
    return {"baseline_mae_last_week": float(np.mean(np.abs(frame["lag_168"].to_numpy(float) - y))),
            "baseline_mae_yesterday": float(np.mean(np.abs(frame["lag_24"].to_numpy(float) - y)))}


class FlowForecaster(FittedModel):
    def __init__(self, net: FlowNet, info: Mapping[str, Any]):
        self.net = net
        self.info = dict(info)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return _forecast(self.net, matrix_of(X))

    def size_bytes(self) -> int:
        return parameter_bytes(self.net)

    def log_model(self, name: str, input_example: pd.DataFrame, metadata: dict) -> str:
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema, TensorSpec

        # "double" columns: MLflow's scoring server and serving.dataplane cast JSON numbers to them; a direct
        # pyfunc.predict call must pass floats (MLflow refuses int64 columns other than 0/1 for "double").
        signature = ModelSignature(inputs=Schema([ColSpec("double", c) for c in FEATURES]),
                                   outputs=Schema([TensorSpec(np.dtype(np.float64), (-1,))]))
        with tempfile.TemporaryDirectory() as tmp:
            program = export_program(self.net, Path(tmp) / "program", [None, len(FEATURES)], "features")
            (program / "features.json").write_text(json.dumps({"features": list(FEATURES), "target": TARGET}))
            return log_program_pyfunc(name, PYFUNC_FILE, program, signature=signature,
                                      input_example=input_example[list(FEATURES)].astype(float),
                                      metadata={**metadata, **self.info,
                                                "input": f"{len(FEATURES)} numeric columns: {', '.join(FEATURES)}"})


class MlpFamily(ModelFamily):
    name = "mlp"
    space = {
        "hidden": Categorical([32, 64, 128, 256]),
        "layers": Int(1, 3),
        "dropout": Float(0.0, 0.3),
        "learning_rate": Float(3e-4, 1e-2, log=True),
        "weight_decay": Float(1e-7, 1e-3, log=True),
        "batch_size": Categorical([128, 256, 512]),
    }
    defaults = {"epochs": 40, "batch_size": 256, "learning_rate": 4e-3, "hidden": 256, "layers": 2,
                "dropout": 0.05, "weight_decay": 1e-5, "patience": 8}

    def fit(self, train: Dataset, valid: Dataset, params: Mapping[str, Any], reporter: Reporter) -> FlowForecaster:
        p = {**self.defaults, **params}
        epochs, batch_size, patience = int(p["epochs"]), int(p["batch_size"]), int(p["patience"])
        x_train, y_train = matrix_of(train.X), train.y.to_numpy(np.float32)
        x_valid, y_valid = matrix_of(valid.X), valid.y.to_numpy(np.float64)
        scale = float(max(y_train.mean(), 1.0))

        seed = fit_seed(p, train)
        rng = seed_everything(seed)
        net = FlowNet(_stats(x_train), int(p["hidden"]), int(p["layers"]), float(p["dropout"]))
        steps = max(1, -(-len(x_train) // batch_size))
        schedule = paddle.optimizer.lr.CosineAnnealingDecay(float(p["learning_rate"]), T_max=max(1, epochs * steps))
        optimizer = paddle.optimizer.AdamW(learning_rate=schedule, parameters=net.parameters(),
                                           weight_decay=float(p["weight_decay"]))

        def run_epoch(epoch: int) -> float:
            losses = []
            for idx in minibatches(len(x_train), batch_size, rng):
                forecast = net(paddle.to_tensor(x_train[idx]))
                loss = F.l1_loss(forecast / scale, paddle.to_tensor(y_train[idx]) / scale)
                loss.backward()
                optimizer.step()
                optimizer.clear_grad()
                schedule.step()
                losses.append(float(loss))
            return float(np.mean(losses)) * scale

        def evaluate() -> float:
            return float(np.mean(np.abs(_forecast(net, x_valid) - y_valid)))

        loop = fit_epochs(net, run_epoch, evaluate, reporter, epochs=epochs, patience=patience,
                          direction="minimize")
        info = {"parameters": parameter_count(net), "best_epoch": loop.best_epoch, "epochs_run": loop.epochs_run,
                "fit_seed": seed, "features": list(FEATURES)}
        if mlflow.active_run() is not None:
            for epoch, loss in enumerate(loop.train_loss, start=1):
                mlflow.log_metric("train_mae", loss, step=epoch)
            mlflow.log_metrics({"best_epoch": loop.best_epoch, "epochs_run": loop.epochs_run,
                                **seasonal_baselines(valid.frame)})
            mlflow.log_figure(week_figure(valid, _forecast(net, x_valid)), "plots/forecast_vs_actual_week.png")
        return FlowForecaster(net, info)


FAMILIES = {"mlp": MlpFamily()}
