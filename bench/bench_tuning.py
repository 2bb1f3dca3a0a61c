"""Tuning benchmarks, measured side by side in one run (results: bench/results/tuning.md).

1. Per-trial overhead of the MLflow layout (nested trial run through ``projects.train``, trial attributes,
   state recording, heartbeats) against bare Optuna on the same fixed-cost objective (sleep 1 s): the median
   time from one trial's completion to the next, alternating bare and CivicML studies; the per-study fixed
   cost (parent run, plots, summary) is reported apart.
2. Trials per minute with 1 and N worker processes on one PostgreSQL study, fixed-cost objective (``--workers
   1,8``): over the trials' span, over the whole call, and while every worker was running.
3. Pruning (median) against none on a neural-net use case (traffic_flow MLP, per-epoch reports): epochs
   trained until the study first reaches the value both studies reach.

    .venv/bin/python bench/bench_tuning.py [--trials 8] [--rounds 3] [--workers 1,8 --worker-trials 10 --trials-per-worker] [--prune-trials 10] [--pg postgresql://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from civicml.settings import Settings
from projects.base import Dataset, FittedModel, ModelFamily, UseCase
from projects.space import Float

SLEEP = 1.0
class _Constant(FittedModel):
    def __init__(self, value: float):
        self.value = value

    def predict(self, X):
        return np.full(len(X), self.value)

    def log_model(self, name, input_example, metadata):
        import mlflow

        mlflow.log_dict({"value": self.value}, f"{name}/value.json")  # no real model to log: a fixed-cost stand-in
        return f"runs:/{mlflow.active_run().info.run_id}/{name}"


class SleepFamily(ModelFamily):
    """Takes exactly SLEEP seconds to 'fit'; its error is (x - 0.3)^2."""

    name = "sleep"
    space = {"x": Float(0.0, 1.0)}

    def fit(self, train, valid, params, reporter):
        time.sleep(SLEEP)
        return _Constant(float(valid.y.mean()) + (float(params["x"]) - 0.3) ** 2)


class SleepCase(UseCase):
    name = "bench_sleep"
    task = "regression"
    metric = "mae"
    direction = "minimize"
    registered_model = "bench-sleep"

    @property
    def families(self):
        return {"sleep": SleepFamily()}

    def generate_sources(self, folder, n, seed):
        return []

    def integrate(self, sources):
        frame = pd.DataFrame({"a": np.arange(40.0), "y": np.zeros(40)})
        return Dataset.build(self.name, frame, "y", ["a"])


def _cycles(trials) -> list[float]:
    """Seconds from one trial's completion to the next one's: everything a trial costs (sampling, the
    objective, the trial's bookkeeping, callbacks), and nothing that is paid once per study."""
    ends = sorted(t.datetime_complete for t in trials if t.datetime_complete)
    return [(b - a).total_seconds() for a, b in zip(ends, ends[1:])]


def overhead(trials: int, home: Path, rounds: int = 3) -> dict:
    """Bare Optuna and CivicML's layout on the same 1 s objective, alternated ``rounds`` times.

    Per-trial cost is the median cycle (see ``_cycles``) over all rounds; the per-study fixed cost
    (parent run, plots, summary) is the whole call minus its trials' cycles, reported apart.
    """
    from projects import train
    from tuning import tune

    def bare(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        time.sleep(SLEEP)
        return (x - 0.3) ** 2

    case = SleepCase()
    data = case.integrate([])
    warm = Settings.from_env(env={}, home=home / "warm")
    tune(case, data, n_trials=2, study_name="warm", settings=warm, pruner="none")  # imports, first DB set-up
    from tuning.choices import make_sampler

    bare_cycles, default_cycles, ours_cycles, fixed, train_s, bare_cpu, ours_cpu = [], [], [], [], [], [], []
    for r in range(rounds):
        # bare Optuna with tune()'s sampler (multivariate TPE, grouped by family), on a plain SQLite file
        study = optuna.create_study(storage=f"sqlite:///{home / f'bare-{r}.db'}", sampler=make_sampler("tpe", r))
        cpu = time.process_time()
        study.optimize(bare, n_trials=trials)
        bare_cpu.append((time.process_time() - cpu) / trials)
        bare_cycles += _cycles(study.trials)

        # bare Optuna as it comes: the default (independent) TPE sampler, cheaper per trial
        study = optuna.create_study(storage=f"sqlite:///{home / f'default-{r}.db'}",
                                    sampler=optuna.samplers.TPESampler(seed=r))
        study.optimize(bare, n_trials=trials)
        default_cycles += _cycles(study.trials)

        settings = Settings.from_env(env={}, home=home / f"ours-{r}")
        tune(case, data, n_trials=1, study_name="first", settings=settings, pruner="none")  # creates the stores
        cpu = time.process_time()
        tune(case, data, n_trials=1, study_name="one", settings=settings, pruner="none", seed=r)
        one_cpu, cpu = time.process_time() - cpu, time.process_time()
        started = time.perf_counter()
        tune(case, data, n_trials=trials, study_name="overhead", settings=settings, pruner="none", seed=r)
        wall = time.perf_counter() - started
        ours_cpu.append((time.process_time() - cpu - one_cpu) / (trials - 1))  # a study's fixed cost cancels out
        done = optuna.load_study(study_name="overhead", storage=settings.optuna_storage).trials
        cycles = _cycles(done)
        ours_cycles += cycles
        fixed.append(wall - statistics.median(cycles) * len(done))

        started = time.perf_counter()  # the training layer's own MLflow run, no Optuna, same stores
        train(case, data, "sleep", {"x": 0.5}, settings=settings, log_model=False)
        train_s.append(time.perf_counter() - started)
    bare_s, ours_s = statistics.median(bare_cycles), statistics.median(ours_cycles)
    default_s = statistics.median(default_cycles)
    return {"bare_s": bare_s, "ours_s": ours_s, "train_s": statistics.median(train_s), "default_s": default_s,
            "default_pct": 100 * (ours_s - default_s) / default_s,
            "fixed_s": statistics.median(fixed), "bare_cpu_s": statistics.median(bare_cpu),
            "ours_cpu_s": statistics.median(ours_cpu), "overhead_pct": 100 * (ours_s - bare_s) / bare_s,
            "n": len(ours_cycles), "rounds": rounds}


def _steady(done) -> tuple[float, int]:
    """The window in which every worker process was running trials (from the last worker's first start to the
    first worker's last completion) and the trials completed inside it: throughput with process start-up and
    the study's tail (fewer trials left than workers) left out."""
    by_worker: dict = {}
    for t in done:
        worker = t.user_attrs.get("worker") or {}
        by_worker.setdefault((worker.get("host"), worker.get("pid")), []).append(t)
    begin = max(min(t.datetime_start for t in ts) for ts in by_worker.values())
    end = min(max(t.datetime_complete for t in ts) for ts in by_worker.values())
    inside = sum(1 for t in done if begin <= t.datetime_complete <= end)
    return (end - begin).total_seconds(), inside


def _gaps(done) -> list[float]:
    """Seconds from a trial's completion to the start of the same worker's next one: the worker's bookkeeping
    between trials (callbacks, the next ask), where more workers on one study cost more."""
    by_worker: dict = {}
    for t in done:
        worker = t.user_attrs.get("worker") or {}
        by_worker.setdefault((worker.get("host"), worker.get("pid")), []).append(t)
    gaps = []
    for ts in by_worker.values():
        ts = sorted(ts, key=lambda t: t.datetime_start)
        gaps += [(b.datetime_start - a.datetime_complete).total_seconds() for a, b in zip(ts, ts[1:])]
    return gaps


def workers(trials: int, home: Path, pg_admin: str, counts: tuple[int, ...] = (1, 2),
            scale: bool = False, pg_tracking: bool = False) -> dict:
    """One PostgreSQL study per worker count on the 1 s objective. ``scale``: ``trials`` per worker (each
    worker runs the same number of trials, so each study should take the same time), else ``trials`` in all.
    ``pg_tracking``: the trial runs tracked in a PostgreSQL database of their own too (a team's layout),
    else in the home's SQLite file."""
    import psycopg2

    from tuning import tune
    from tuning.storage import open_storage

    out = {}
    for w in counts:
        name = f"civicml_bench_{uuid.uuid4().hex[:8]}"
        admin = psycopg2.connect(pg_admin)
        admin.autocommit = True
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
        url = pg_admin.rsplit("/", 1)[0] + "/" + name
        if pg_tracking:
            admin.cursor().execute(f'CREATE DATABASE "{name}_runs"')
        n = trials * w if scale else trials
        try:
            overrides = {"tracking_uri": f"{url}_runs", "artifact_root": (home / f"w{w}" / "artifacts").as_uri()} \
                if pg_tracking else {}
            settings = Settings.from_env(env={}, home=home / f"w{w}", **overrides)
            case = SleepCase()
            started = time.perf_counter()
            tune(case, case.integrate([]), n_trials=n, study_name="speed", storage=url, settings=settings,
                 pruner="none", workers=w)
            wall = time.perf_counter() - started
            done = [t for t in optuna.load_study(study_name="speed", storage=open_storage(url)).trials
                    if t.datetime_complete]
            span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
            steady_s, steady_n = _steady(done)
            cycle = statistics.median((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
            out[w] = {"trials": len(done), "span_s": span, "wall_s": wall, "per_min": 60 * len(done) / span,
                      "per_min_wall": 60 * len(done) / wall, "steady_s": steady_s, "steady_n": steady_n,
                      "per_min_steady": 60 * steady_n / steady_s if steady_s > 0 else float("nan"),
                      "trial_s": cycle, "gap_s": statistics.median(_gaps(done) or [float("nan")])}
        finally:
            admin.cursor().execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                                   (name,))
            for db in (name, f"{name}_runs"):
                admin.cursor().execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                                       (db,))
                admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}"')
            admin.close()
    base = counts[0]
    out["speedup"] = {w: out[w]["per_min"] / out[base]["per_min"] for w in counts}
    out["speedup_wall"] = {w: out[w]["per_min_wall"] / out[base]["per_min_wall"] for w in counts}
    out["speedup_steady"] = {w: out[w]["per_min_steady"] / out[base]["per_min_steady"] for w in counts}
    return out


def pruning(trials: int, home: Path, use_case_name: str, rows: int, seed: int = 0,
            pruners: tuple[str, ...] = ("median",)) -> dict:
    """One study without pruning and one per pruner, same sampler seed; for each pruner, the epochs each of
    the two studies trained until it first reached the value both reach (the worse of their two bests)."""
    from projects import get_use_case
    from tuning import tune

    case = get_use_case(use_case_name)
    data = case.integrate(case.generate_sources(home / "data", n=rows, seed=0))
    family = next(iter(case.families)) if use_case_name != "service_requests" else "boosting"
    sign = 1 if case.direction == "minimize" else -1
    runs = {}
    for pruner in ("none", *pruners):
        settings = Settings.from_env(env={}, home=home / f"prune-{pruner}-{seed}")
        result = tune(case, data, n_trials=trials, families=[family], study_name="prune", settings=settings,
                      pruner=pruner, seed=seed)
        study = optuna.load_study(study_name="prune", storage=settings.optuna_storage)
        runs[pruner] = {"trials": sorted(study.trials, key=lambda t: t.number), "best": result.best_value,
                        "pruned": result.n_pruned}

    def epochs(pruner: str, reach: float) -> tuple[int | None, int]:
        total, until = 0, None
        for t in runs[pruner]["trials"]:
            total += len(t.intermediate_values)
            if until is None and t.state.name == "COMPLETE" and sign * t.value <= reach + 1e-12:
                until = total
        return until, total

    out = {"family": f"{use_case_name}/{family}"}
    for pruner in pruners:
        reach = max(sign * runs["none"]["best"], sign * runs[pruner]["best"])
        (none_to, none_all), (with_to, with_all) = epochs("none", reach), epochs(pruner, reach)
        out[pruner] = {"reach": sign * reach, "best": runs[pruner]["best"], "none_best": runs["none"]["best"],
                       "pruned": runs[pruner]["pruned"], "none_to": none_to, "to": with_to,
                       "none_all": none_all, "all": with_all}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="fixed-cost trials per study (overhead)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare / CivicML rounds (overhead)")
    parser.add_argument("--worker-trials", type=int, default=12, help="trials per study (per worker with "
                        "--trials-per-worker)")
    parser.add_argument("--workers", default="1,2", help="worker counts compared, the first is the baseline "
                        "(e.g. 1,8)")
    parser.add_argument("--trials-per-worker", action="store_true", help="each study runs --worker-trials trials "
                        "per worker process")
    parser.add_argument("--prune-trials", type=int, default=12)
    parser.add_argument("--prune-use-case", default="traffic_flow")
    parser.add_argument("--prune-rows", type=int, default=3000)
    parser.add_argument("--prune-seeds", type=int, default=3, help="sampler seeds: one set of studies each")
    parser.add_argument("--pruners", default="median,halving,hyperband", help="pruners compared with none")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--pg-tracking", action="store_true", help="workers: the trial runs tracked on PostgreSQL "
                        "(a database of their own) instead of the home's SQLite file")
    parser.add_argument("--skip", nargs="*", default=[], choices=["overhead", "workers", "pruning"])
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    home = Path(tempfile.mkdtemp(prefix="bench-tuning-"))
    if "overhead" not in args.skip:
        o = overhead(args.trials, home, args.rounds)
        print(f"overhead: median trial cycle over {o['n']} trials ({o['rounds']} alternating rounds): bare Optuna "
              f"with tune()'s sampler "
              f"{o['bare_s']:.3f} s, CivicML layout {o['ours_s']:.3f} s -> per-trial overhead "
              f"{o['overhead_pct']:.1f}% of a {o['bare_s']:.2f} s trial", flush=True)
        print(f"  CPU time per trial, every thread of the process, the objective asleep: bare Optuna "
              f"{1000 * o['bare_cpu_s']:.0f} ms, CivicML {1000 * o['ours_cpu_s']:.0f} ms (what an objective that keeps "
              f"every core busy would pay at most)", flush=True)
        print(f"  bare Optuna with its default sampler (independent TPE) {o['default_s']:.3f} s -> "
              f"{o['default_pct']:.1f}% (the difference is the sampler's, not the layout's)", flush=True)
        print(f"  plain projects.train() of the same objective (its own MLflow run, synchronous writes): "
              f"{o['train_s']:.3f} s; per-study fixed cost (parent run, plots, summary): {o['fixed_s']:.2f} s "
              f"= {o['fixed_s'] / args.trials:.3f} s/trial over {args.trials} trials", flush=True)
    if "workers" not in args.skip:
        print(f"load average {os.getloadavg()[0]:.1f} at the start", flush=True)
        counts = tuple(int(c) for c in args.workers.split(","))
        w = workers(args.worker_trials, home, args.pg, counts, args.trials_per_worker, args.pg_tracking)
        for n in counts:
            r = w[n]
            print(f"workers={n}: {r['trials']} trials, {r['per_min']:.1f} trials/min over the trials' span "
                  f"({r['span_s']:.1f} s), {r['per_min_wall']:.1f} trials/min over the whole call "
                  f"({r['wall_s']:.1f} s, process start-up included), {r['per_min_steady']:.1f} trials/min while "
                  f"all {n} ran ({r['steady_n']} trials in {r['steady_s']:.1f} s); median trial "
                  f"{r['trial_s']:.3f} s, median gap between a worker's trials {r['gap_s']:.3f} s", flush=True)
        for n in counts[1:]:
            print(f"speed-up {n} vs {counts[0]} workers: {w['speedup'][n]:.2f}x (trial span), "
                  f"{w['speedup_wall'][n]:.2f}x (whole call), {w['speedup_steady'][n]:.2f}x (all workers running)",
                  flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} at the end", flush=True)
    if "pruning" not in args.skip:
        pruners = tuple(args.pruners.split(","))
        sums = {k: {"none_to": 0, "to": 0, "none_all": 0, "all": 0} for k in pruners}
        for seed in range(args.prune_seeds):
            p = pruning(args.prune_trials, home, args.prune_use_case, args.prune_rows, seed, pruners)
            for k in pruners:
                r = p[k]
                print(f"seed {seed} pruner={k}: best {r['best']:.4f} ({r['pruned']} pruned) vs {r['none_best']:.4f} "
                      f"unpruned; epochs to reach {r['reach']:.4f}: {r['to']} vs {r['none_to']}; epochs in all: "
                      f"{r['all']} vs {r['none_all']}", flush=True)
                for key in sums[k]:
                    sums[k][key] += r[key]
        for k in pruners:
            t = sums[k]
            print(f"pruning ({k}) on {p['family']}, {args.prune_seeds} seeds: "
                  f"{100 * (1 - t['to'] / t['none_to']):.0f}% fewer epochs to reach the same best value "
                  f"({t['none_to']} -> {t['to']}), {100 * (1 - t['all'] / t['none_all']):.0f}% fewer in all "
                  f"({t['none_all']} -> {t['all']})", flush=True)


if __name__ == "__main__":
    main()
