"""Batch scoring on Spark: CivicML's runtime inside mapInPandas against mlflow.pyfunc.spark_udf, side by side.

    .venv/bin/python bench/bench_scoring.py [--rows 20000] [--repeats 2]

One local Spark session, one registered 311 router (TF-IDF + logistic regression), the same rows: each path
is timed end to end (read the Parquet input, answer every row, write Parquet), the fastest of ``repeats``
runs each, in alternating order. Prints rows per second and the ratio. ``civicml score`` uses the first path
(it also checks each row as HTTP does and splits refused rows out); the second is MLflow's own UDF with
``env_manager="local"``, answering the label only.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import mlflow.pyfunc

    import registry
    from civicml.settings import Settings
    from projects import get_use_case, train
    from serving.scoring import ScoreOptions, _run, _spark, _SparkJob

    folder = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    settings = Settings.from_env(env={}, home=folder / "home", user="bench")
    use_case = get_use_case("service_requests")
    data = use_case.integrate(use_case.generate_sources(folder / "data", n=2000, seed=1))
    result = train(use_case, data, "logreg", {"char_ngrams": False}, settings=settings)
    registry.register(result.model_uri, "bench-router", settings=settings)
    local = registry.resolve("bench-router", "1", settings=settings)
    frame = data.frame[["description", "district", "channel", "hour", "weekday"]]
    frame = frame.sample(args.rows, replace=True, random_state=0).reset_index(drop=True)
    frame.to_parquet(folder / "input.parquet")
    job = _SparkJob(local, "pyfunc", None, [str(folder / "input.parquet")], "parquet", ScoreOptions())

    def civicml(spark, out: Path) -> None:
        _run(spark, job, out, lambda text: None)

    def spark_udf(spark, out: Path) -> None:
        udf = mlflow.pyfunc.spark_udf(spark, str(local.path), result_type="string", env_manager="local")
        source = spark.read.parquet(str(folder / "input.parquet"))
        source.withColumn("answer", udf(*[source[c] for c in frame.columns])).write.parquet(str(out))

    best = {"civicml runtime in mapInPandas": float("inf"), "mlflow.pyfunc.spark_udf": float("inf")}
    with _spark("local[*]", folder / "spark.log") as spark:
        paths = list(zip(best, (civicml, spark_udf)))
        for repeat in range(args.repeats):
            for name, run in (paths if repeat % 2 == 0 else paths[::-1]):
                out = folder / f"out-{repeat}-{run.__name__}"
                started = time.perf_counter()
                run(spark, out)
                best[name] = min(best[name], time.perf_counter() - started)
                shutil.rmtree(out, ignore_errors=True)
    print(f"{args.rows} rows, best of {args.repeats}, local[*] on this machine:")
    for name, seconds in best.items():
        print(f"  {name:34s} {args.rows / seconds:10.0f} rows/s  ({seconds:.2f} s)")
    first, second = best.values()
    print(f"  ratio civicml / spark_udf (throughput): {second / first:.2f}x")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
