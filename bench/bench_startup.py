"""Start-up of the light commands: the ones that neither train nor serve, each a fresh process.

Every command runs as its own child process (``python -m app.cli ...``), from an empty temporary folder,
with a fresh ``CIVICML_HOME`` that holds no store (so ``models list`` has nothing to read and must create
nothing) and no ``CIVICML_*`` / ``MLFLOW_*`` variables inherited from the caller. Wall time is measured
around the whole child: interpreter start, imports, parsing, the command and exit.

With ``--baseline-python`` the same commands run with a second interpreter too, alternating which goes
first in each round: the interpreter of another checkout's virtual environment runs that checkout's code
(its editable install points there), e.g. ``../civicml-old/.venv/bin/python``. ``--baseline-root`` instead runs
this interpreter with another checkout of the repository first on ``PYTHONPATH`` (a ``git worktree`` of an
older revision).

Run:  .venv/bin/python bench/bench_startup.py [--rounds 5] [--baseline-python PATH | --baseline-root DIR]
Prints the median wall time of each command (and the baseline's, and their ratio), and each command's exit
code (a parse error is expected to exit 2, a model that is not there too); then two floors, measured the
same way: a bare interpreter, and one that imports MLflow's client (what a registry command cannot avoid).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (label, arguments): the commands that neither train nor serve
COMMANDS = [
    ("help", ["--help"]),
    ("parse error", ["models"]),
    ("whoami", ["whoami"]),
    ("token", ["token", "ana", "--role", "data_scientist"]),
    ("models list", ["models", "list"]),
    ("models show", ["models", "show", "service-requests-router"]),
    ("models lineage", ["models", "lineage", "service-requests-router", "1"]),
    ("audit", ["audit", "service-requests-router"]),
    ("alias", ["alias", "service-requests-router", "challenger", "1"]),
]
# (label, code): what any command pays at least; run by the measured interpreter only
FLOORS = [
    ("floor: python", "pass"),
    ("floor: mlflow", "import mlflow; from mlflow.tracking import MlflowClient"),
]


class Runner:
    """One way of starting the CLI: an interpreter, and optionally a checkout put first on the path."""

    def __init__(self, python: str, root: Path | None = None):
        self.python = python
        self.root = root

    def env(self, home: Path) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CIVICML_", "MLFLOW_"))}
        env["CIVICML_HOME"] = str(home)
        env.pop("PYTHONPATH", None)
        if self.root is not None:
            env["PYTHONPATH"] = str(self.root)
        return env

    def once(self, args: list[str], scratch: Path) -> tuple[float, int]:
        """One run of ``civicml ARGS`` (or of ``python -c CODE`` for ``["-c", CODE]``): wall seconds, exit code."""
        folder = Path(tempfile.mkdtemp(dir=scratch))
        home = folder / "home"
        command = [self.python, *args] if args[0] == "-c" else [self.python, "-m", "app.cli", *args]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=folder, env=self.env(home),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - started
        if done.returncode not in (0, 2):
            raise SystemExit(f"civicml {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        if home.exists() and args[:2] == ["models", "list"]:
            raise SystemExit(f"civicml models list created {home}")
        return wall, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure (default: this one)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--baseline-python", help="a second interpreter (another checkout's venv) to compare")
    group.add_argument("--baseline-root", type=Path, help="another checkout, run with --python on PYTHONPATH")
    parser.add_argument("--only", nargs="+", metavar="LABEL", help="measure only these commands")
    options = parser.parse_args()

    runners = {"current": Runner(options.python)}
    if options.baseline_python:
        runners["baseline"] = Runner(options.baseline_python)
    elif options.baseline_root:
        runners["baseline"] = Runner(options.python, options.baseline_root.resolve())
    commands = [(label, args) for label, args in COMMANDS if not options.only or label in options.only]
    floors = [(label, ["-c", code]) for label, code in FLOORS if not options.only or label in options.only]

    times: dict[tuple[str, str], list[float]] = {}
    codes: dict[tuple[str, str], int] = {}
    with tempfile.TemporaryDirectory(prefix="civicml-startup-") as scratch:
        for round_ in range(options.rounds):
            order = list(runners) if round_ % 2 == 0 else list(reversed(runners))
            for label, args in commands:
                for name in order:
                    wall, code = runners[name].once(args, Path(scratch))
                    times.setdefault((name, label), []).append(wall)
                    codes[(name, label)] = code
            for label, args in floors:
                wall, code = runners["current"].once(args, Path(scratch))
                times.setdefault(("current", label), []).append(wall)
                codes[("current", label)] = code

    header = f"{'command':<16} {'exit':>4} {'current s':>10}"
    if "baseline" in runners:
        header += f" {'baseline s':>11} {'ratio':>6}"
    print(f"median wall time of a fresh process, {options.rounds} rounds")
    print(header)
    for label, _ in commands:
        current = statistics.median(times[("current", label)])
        line = f"{label:<16} {codes[('current', label)]:>4} {current:>10.2f}"
        if "baseline" in runners:
            baseline = statistics.median(times[("baseline", label)])
            line += f" {baseline:>11.2f} {baseline / current:>5.1f}x"
        print(line)
    for label, _ in floors:
        print(f"{label:<16} {codes[('current', label)]:>4} {statistics.median(times[('current', label)]):>10.2f}")


if __name__ == "__main__":
    main()
