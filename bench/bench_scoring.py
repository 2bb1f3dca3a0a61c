"""Batch scoring: `civicml score`'s job against plain `mlflow.pyfunc.spark_udf` and one process calling
`predict` in batches, for the 311 router and a tabular use-case model, on one or more Spark masters.

    nice -n 5 .venv/bin/python bench/bench_scoring.py --rows 200000 --masters local[1],local[2] \\
        [--models router,tabular] [--repeats 1] [--out bench/results/scoring.md]

Two registered models: the 311 router (TF-IDF + logistic regression, 2,000 generated tickets) and the
restaurant-inspections use-case file of ``tests/tabular_exports.py`` (scikit-learn's HistGradientBoosting at
its defaults over CivicML's tabular features: dates, categories, the notes' TF-IDF; 2,000 inspections).
Each model's input is ROWS of its own rows drawn with replacement, in one Parquet file. Paths, each end to
end (read the Parquet, answer every row, write Parquet):

* ``civicml score``: the command's Spark job (:func:`serving.scoring._run`: CivicML's runtime inside
  ``mapInPandas``, every row checked as HTTP checks it, refused rows split out, label + confidence +
  version + variant beside the input's columns) plus the input fingerprint; not timed: Spark's start-up
  (shared by all Spark paths of a master) and the job's MLflow run (well under a second);
* ``spark_udf``: ``mlflow.pyfunc.spark_udf(env_manager="local")`` answering the label only, no checks;
* ``batch predict``: one Python process, no Spark: ``pandas.read_parquet``, ``mlflow.pyfunc.load_model``,
  ``predict`` on 5,000-row batches, the labels written to Parquet.

Each master gets its own Spark session (its Python workers stay up between that master's jobs), warmed up
by scoring 2,000 rows on each Spark path first (not timed); within a session the paths run in rotating
order, ``--repeats`` times, and the fastest is kept. Reported: rows a
second (wall), CPU seconds of this process and all its descendants (the JVM, Spark's Python workers) from
/proc, and each Spark path's scaling from the first master to the second. The load average is printed
before and after: on a shared machine the wall-clock figures, and the scaling most, move with other load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
BATCH = 5000


def _tree_cpu() -> float:
    """CPU seconds (user + system, and of reaped children) of this process and every descendant."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = sum(int(x) for x in fields[11:15])
    mine, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in mine]
        mine.update(children)
        frontier.extend(children)
    return sum(times.get(p, 0) for p in mine) / os.sysconf("SC_CLK_TCK")


def _router(folder: Path, settings, rows: int):
    import registry
    from projects import get_use_case, train

    use_case = get_use_case("service_requests")
    data = use_case.integrate(use_case.generate_sources(folder / "router-data", n=2000, seed=1))
    result = train(use_case, data, "logreg", {"char_ngrams": False}, settings=settings)
    registry.register(result.model_uri, "bench-router", settings=settings)
    frame = data.frame[["description", "district", "channel", "hour", "weekday"]]
    return registry.resolve("bench-router", "1", settings=settings), frame


def _tabular(folder: Path, settings, rows: int):
    import yaml

    import registry
    from projects import get_use_case, load_dataset, train
    from tabular_exports import INSPECTIONS_YAML, inspections

    inspections(folder / "exports", n=2000, seed=1)
    spec = yaml.safe_load(INSPECTIONS_YAML.format(name="inspections", families="hist_gradient_boosting"))
    (folder / "exports" / "usecase.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    use_case = get_use_case(str(folder / "exports" / "usecase.yaml"))
    data = load_dataset(use_case, use_case.generate_sources(None))
    result = train(use_case, data, "hist_gradient_boosting", {}, settings=settings)
    registry.register(result.model_uri, "bench-inspections", settings=settings, tags=use_case.registry_tags)
    return registry.resolve("bench-inspections", "1", settings=settings), data.X


def _paths(local, source: Path, columns: list[str]):
    """The three ways to score ``source`` with ``local``: name -> run(spark or None, out folder)."""
    import mlflow.pyfunc
    import pandas as pd

    from serving.scoring import ScoreOptions, _run, _SparkJob, input_fingerprint

    job = _SparkJob(local, "pyfunc", None, [str(source)], "parquet", ScoreOptions(batch_rows=BATCH))

    def civicml(spark, out: Path) -> None:
        input_fingerprint(job.files)
        _run(spark, job, out, lambda text: None)

    def spark_udf(spark, out: Path) -> None:
        udf = mlflow.pyfunc.spark_udf(spark, str(local.path), result_type="string", env_manager="local")
        frame = spark.read.parquet(str(source))
        frame.withColumn("answer", udf(*[frame[c] for c in columns])).write.parquet(str(out))

    def batch_predict(spark, out: Path) -> None:
        frame = pd.read_parquet(source)
        model = mlflow.pyfunc.load_model(str(local.path))
        labels = []
        for start in range(0, len(frame), BATCH):
            answer = model.predict(frame.iloc[start:start + BATCH][columns])
            labels.append(answer["label"] if isinstance(answer, pd.DataFrame) else pd.Series(answer))
        out.mkdir()
        answers = pd.concat(labels, ignore_index=True).astype(str).to_numpy()
        frame.assign(answer=answers).to_parquet(out / "part.parquet")

    return {"civicml score": civicml, "spark_udf": spark_udf, "batch predict": batch_predict}


def _timed(run, spark, out: Path) -> tuple[float, float]:
    cpu, started = _tree_cpu(), time.perf_counter()
    run(spark, out)
    wall = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    return wall, _tree_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--masters", default="local[1],local[2]")
    parser.add_argument("--models", default="router,tabular")
    parser.add_argument("--out", help="also write the report (Markdown) here")
    args = parser.parse_args()
    masters, models = args.masters.split(","), args.models.split(",")

    from civicml.settings import Settings
    from serving.scoring import _spark

    folder = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    settings = Settings.from_env(env={}, home=folder / "home", user="bench")
    cases = {}
    for model in models:
        local, frame = {"router": _router, "tabular": _tabular}[model](folder, settings, args.rows)
        source, small = folder / f"{model}.parquet", folder / f"{model}-warm-up.parquet"
        frame.sample(args.rows, replace=True, random_state=0).reset_index(drop=True).to_parquet(source)
        frame.sample(2000, replace=True, random_state=1).reset_index(drop=True).to_parquet(small)
        cases[model] = (_paths(local, source, list(frame.columns)), _paths(local, small, list(frame.columns)))
    best: dict[tuple, tuple[float, float]] = {}
    load_before = os.getloadavg()

    def keep(key, measured):
        best[key] = min(best.get(key, measured), measured)

    for repeat in range(args.repeats):
        for model, (paths, _) in cases.items():
            keep((model, "batch predict", "one process"),
                 _timed(paths["batch predict"], None, folder / f"out-{model}-batch-{repeat}"))
        for turn, master in enumerate(masters):
            with _spark(master, folder / "spark.log") as spark:
                for model, (_, warm_up) in cases.items():  # Python workers started, models loaded: not timed
                    for name in ("civicml score", "spark_udf"):
                        warm_up[name](spark, folder / f"warm-{model}-{name}-{repeat}-{turn}")
                for model, (paths, _) in cases.items():
                    order = ["civicml score", "spark_udf"][::(-1) ** (repeat + turn)]
                    for name in order:
                        keep((model, name, master), _timed(paths[name], spark, folder / f"out-{model}-{name}-{repeat}"))
    report = _report(args, best, masters, (load_before, os.getloadavg()))
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    shutil.rmtree(folder, ignore_errors=True)


def _report(args, best: dict, masters: list[str], loads) -> str:
    def load(values):
        return ", ".join(f"{v:.2f}" for v in values)

    lines = [f"{args.rows:,} rows a model, fastest of {args.repeats}; {os.cpu_count()} CPUs; load average "
             f"{load(loads[0])} before, {load(loads[1])} after", "",
             "| model | path | where | rows/s (wall) | seconds | CPU s (all processes) | rows per CPU s |",
             "|---|---|---|---:|---:|---:|---:|"]
    for (model, name, where), (wall, cpu) in best.items():
        lines.append(f"| {model} | {name} | {where} | {args.rows / wall:,.0f} | {wall:.1f} | {cpu:.1f} | "
                     f"{args.rows / cpu if cpu else float('nan'):,.0f} |")
    if len(masters) >= 2:
        lines += ["", f"Scaling from {masters[0]} to {masters[1]} (wall-clock throughput ratio):", ""]
        for (model, name, where), (wall, _) in best.items():
            if where == masters[0] and (model, name, masters[1]) in best:
                lines.append(f"- {model}, {name}: {wall / best[(model, name, masters[1])][0]:.2f}x")
    ratios = [f"- {model} on {where}: civicml score / spark_udf = {best[(model, 'spark_udf', where)][0] / wall:.2f}x"
              for (model, name, where), (wall, _) in best.items()
              if name == "civicml score" and (model, "spark_udf", where) in best]
    return "\n".join(lines + ["", "Throughput ratios:", ""] + ratios) + "\n"


if __name__ == "__main__":
    main()
