"""Opening a new embedded store: MLflow's own migrations vs a copy of the cached, migrated schema, side by side.

Each round creates two new homes in fresh child processes (so that no engine or import is shared between
them), alternating which goes first:

  * migrations: ``SqlAlchemyStore(sqlite:///home/mlflow.db)`` on an empty file, as MLflow does by itself
    (about fifty alembic migrations, one transaction each);
  * seeded:     ``civicml.tracking.tracking_client(settings)``, which copies the empty schema kept in
    ``CIVICML_CACHE_DIR`` (built once, before the rounds) and lets MLflow add the Default experiment.

Both are timed inside the child (wall and CPU of the store opening only, imports excluded), and the first
experiment is read back to check the store works.

Run:  .venv/bin/python bench/bench_new_home.py [--rounds 10]
Prints the median of each and the ratio migrations / seeded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
from pathlib import Path
kind, home = sys.argv[1], Path(sys.argv[2])
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from civicml.settings import Settings
from civicml.tracking import tracking_client
settings = Settings.from_env(env={}, home=home)
wall, cpu = time.perf_counter(), time.process_time()
if kind == "migrations":
    home.mkdir(parents=True)
    store = SqlAlchemyStore(settings.tracking_uri, settings.artifact_root)
    name = store.get_experiment("0").name
else:
    name = tracking_client(settings).get_experiment("0").name
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "name": name}))
"""


def _one(kind: str, home: Path, cache: Path) -> dict:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CIVICML_"))},
           "CIVICML_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", CHILD, kind, str(home)], capture_output=True, text=True,
                          env=env, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["name"] == "Default", result
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _one("seeded", tmp / "warm", tmp / "cache")  # builds the cached schema once
        times: dict[str, list[dict]] = {"migrations": [], "seeded": []}
        for i in range(args.rounds):
            order = ("migrations", "seeded") if i % 2 == 0 else ("seeded", "migrations")
            for kind in order:
                times[kind].append(_one(kind, tmp / f"{kind}-{i}", tmp / "cache"))
    print(f"new embedded store, {args.rounds} rounds each (median; child processes, imports excluded)")
    print(f"{'':<12} {'wall ms':>9} {'cpu ms':>9}")
    medians = {}
    for kind, rows in times.items():
        medians[kind] = (statistics.median(r["wall"] for r in rows) * 1000,
                         statistics.median(r["cpu"] for r in rows) * 1000)
        print(f"{kind:<12} {medians[kind][0]:>9.1f} {medians[kind][1]:>9.1f}")
    print(f"ratio migrations / seeded: wall {medians['migrations'][0] / medians['seeded'][0]:.1f}x, "
          f"cpu {medians['migrations'][1] / medians['seeded'][1]:.1f}x")


if __name__ == "__main__":
    main()
