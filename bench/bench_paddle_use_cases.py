"""Train the two Paddle use cases at their default size and settings; print quality, time and latency.

    .venv/bin/python bench/bench_paddle_use_cases.py [--use-case street_scenes|traffic_flow] [--home DIR]

Prints one JSON line per use case: generation + integration seconds, training
seconds, the primary metrics (and chance / the seasonal baselines), and the
logged pyfunc's median latency for batches of 1 and 64.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _latency(model, batch, repeats: int = 20) -> float:
    model.predict(batch)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict(batch)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def bench(name: str, home: Path, seed: int) -> dict:
    import mlflow

    from civicml.settings import Settings
    from projects import get_use_case, load_dataset, train

    use_case = get_use_case(name)
    started = time.perf_counter()
    dataset = load_dataset(use_case, use_case.generate_sources(home / "data" / name, n=use_case.default_size,
                                                               seed=seed))
    data_seconds = time.perf_counter() - started
    family = next(iter(use_case.families))
    result = train(use_case, dataset, family, settings=Settings.from_env(env={}, home=home), seed=seed)
    model = mlflow.pyfunc.load_model(result.model_uri)
    _, valid = use_case.split(dataset, seed=seed)
    if name == "street_scenes":
        batch = np.stack(valid.X["image"].head(64).to_numpy())
        extra = {"chance_macro_f1": 1 / dataset.y.nunique()}
    else:
        from projects.traffic_flow.model import seasonal_baselines

        batch = valid.X.head(64)
        extra = seasonal_baselines(valid.frame)
    return {"use_case": name, "family": family, "rows": len(dataset), "data_seconds": round(data_seconds, 1),
            "train_seconds": round(result.seconds, 1), "epochs_run": len(result.history),
            **{k: round(v, 4) for k, v in result.metrics.items() if not k.startswith("recall_")},
            **{k: round(v, 4) for k, v in extra.items()},
            "latency_ms_batch_1": round(_latency(model, batch[:1]), 2),
            "latency_ms_batch_64": round(_latency(model, batch), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--use-case", action="append", choices=["street_scenes", "traffic_flow"])
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="civicml-bench-"))
    for name in args.use_case or ["traffic_flow", "street_scenes"]:
        print(json.dumps(bench(name, home, args.seed)), flush=True)


if __name__ == "__main__":
    main()
