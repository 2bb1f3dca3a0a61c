"""Bring your own city problem: time from `civicml init` to a served champion, and tuning quality.

    .venv/bin/python bench/bench_tabular.py --rows 5000 --trials 20

Makes a realistic export (restaurant inspections, ROWS rows, plus a complaints export from another
department), then runs, as a user would, each as its own `civicml` process:

    civicml init inspections --data exports/inspections.csv --target violation
    (the edit: write the use-case file that joins complaints on site and date, privacy, held-out rule)
    civicml data --use-case inspections/usecase.yaml
    civicml tune --use-case inspections/usecase.yaml --n-trials TRIALS
    civicml promote inspections
    civicml serve inspections          (until the first prediction answers)

and prints the wall-clock time of each step and of the whole. The study's first trial is scikit-learn's
HistGradientBoosting at its default settings (the tabular use case enqueues it), so the search always
holds the baseline. Then compares, on the use case's own held-out rows (the last 20% of dates, which no
trial saw), the served champion with scikit-learn's HistGradientBoostingClassifier at default settings,
each fitted on the same rows: (a) the trials' 75% fit split, which the served champion was fitted on,
(b) all training rows, against the champion's settings refit on them; and (c) a plain notebook baseline:
numbers, category codes and date parts, without text features.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _cli(args, cwd, env) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"civicml {' '.join(args)} failed: {done.stderr.strip()}")
    return time.perf_counter() - started, done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--families", default=None, help="comma-separated families (default: the use case's "
                                                          "defaults)")
    args = parser.parse_args()

    import httpx
    import yaml

    from tabular_exports import INSPECTIONS_YAML, inspections

    work = Path(tempfile.mkdtemp(prefix="bench-tabular-"))
    inspections(work / "exports", n=args.rows, seed=11)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "CIVICML_HOME": str(work / "home")}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(name, None)
    steps = {}
    t0 = time.perf_counter()
    steps["init"], _ = _cli(["init", "inspections", "--data", "exports/inspections.csv", "--target", "violation"],
                            work, env)
    from projects.spec import DEFAULT_FAMILIES

    args.families = args.families or ", ".join(DEFAULT_FAMILIES)
    spec = yaml.safe_load(INSPECTIONS_YAML.format(name="inspections", families=args.families))
    for source in spec["sources"]:
        source["path"] = "../exports/" + source["path"]
    (work / "inspections" / "usecase.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    steps["data"], report = _cli(["data", "--use-case", "inspections/usecase.yaml"], work, env)
    steps["tune"], out = _cli(["tune", "--use-case", "inspections/usecase.yaml", "--n-trials", str(args.trials),
                               "--json"], work, env)
    summary = json.loads(out.strip().splitlines()[-1])
    steps["promote"], _ = _cli(["promote", "inspections"], work, env)
    port = _free_port()
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "inspections", "--port", str(port)],
                              cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    row = {"site_id": 1001, "inspected_at": "2025-12-01T10:00:00", "risk_code": "high", "cuisine": "thai",
           "notes": "rodent droppings found near storage", "complaints_30d": 3, "complaint_type": "pests"}
    try:
        while True:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": [row]}, timeout=5)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.perf_counter() - started > 120:
                raise SystemExit("the server did not answer")
            time.sleep(0.2)
        steps["serve (to first answer)"] = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(10)
    total = time.perf_counter() - t0
    print(f"rows {args.rows}, trials {args.trials}, families {args.families}")
    print(report.splitlines()[0])
    for step, seconds in steps.items():
        print(f"  {step:<24} {seconds:7.1f} s")
    print(f"  {'init -> served champion':<24} {total:7.1f} s")
    print(f"  chosen trial {summary['best_trial']}: {summary['best_value']:.4f} on validation; "
          f"{summary['best_params']}")
    _quality(work, env, summary["best_params"])


def _quality(work: Path, env: dict, best_params: dict) -> None:
    os.environ["CIVICML_HOME"] = env["CIVICML_HOME"]
    import mlflow
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    from civicml.settings import Settings
    from civicml.tracking import configure
    from projects import get_use_case
    from projects.base import NullReporter
    from projects.metrics import compute
    from projects.tabular.families import preprocessor

    use_case = get_use_case(str(work / "inspections" / "usecase.yaml"))
    train = use_case.integrate(use_case.generate_sources(None))
    held = use_case.holdout(None)
    configure(Settings.from_env())
    champion = mlflow.pyfunc.load_model("models:/inspections@champion")
    predicted = champion.predict(held.X)
    rows = {"champion (tuned, served model; fit on the trials' 75% split)":
            predicted["label"] if isinstance(predicted, pd.DataFrame) and "label" in predicted else predicted}
    types = {c: t for c, t in train.report["features"].items()}
    fit_part, _ = use_case.split(train, seed=0)  # the rows every trial fits on (tuning's split, seed 0)

    def default_hgb(rows):
        return Pipeline([("features", preprocessor(types, train.features, 300, True)),
                         ("model", HistGradientBoostingClassifier(random_state=0))]).fit(rows.X, rows.y)

    rows["HGB defaults, CivicML's features, same 75% split"] = default_hgb(fit_part).predict(held.X)
    family = best_params.get("family") or next(iter(use_case.families))
    params = {k.split(".", 1)[1]: v for k, v in best_params.items() if k != "family"}
    refit = use_case.family(family).fit(train, train, use_case.family(family).check_params(params), NullReporter())
    rows["champion's settings refit on all training rows"] = refit.predict(held.X)
    rows["HGB defaults, CivicML's features, all training rows"] = default_hgb(train).predict(held.X)

    def plain(frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=frame.index)
        for c, t in types.items():
            if t == "numeric":
                out[c] = frame[c].astype(float)
            elif t == "date":
                when = pd.to_datetime(frame[c], errors="coerce")
                out[c + "_month"], out[c + "_weekday"] = when.dt.month, when.dt.day_of_week
                out[c + "_hour"] = when.dt.hour
            elif t in ("category", "boolean"):
                out[c] = frame[c].astype("category")
        return out

    Xt, Xh = plain(train.X), plain(held.X)
    for c in Xt.columns:
        if isinstance(Xt[c].dtype, pd.CategoricalDtype):
            Xh[c] = pd.Categorical(Xh[c], categories=Xt[c].cat.categories)
    rows["HGB defaults, plain (no text)"] = HistGradientBoostingClassifier(
        random_state=0, categorical_features="from_dtype").fit(Xt, train.y).predict(Xh)
    print(f"held-out: {len(held)} rows (last 20% of dates), training rows {len(train)} "
          f"({len(fit_part)} in the trials' fit split)")
    print("| model | macro_f1 | accuracy |\n|---|---:|---:|")
    for name, pred in rows.items():
        pred = np.asarray(pred).astype(str)
        print(f"| {name} | {compute('macro_f1', held.y, pred):.4f} | {compute('accuracy', held.y, pred):.4f} |")


if __name__ == "__main__":
    main()
