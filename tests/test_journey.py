"""The CLI as users run it: each command a new process, from an empty current folder, with a new home and
none of MLflow's variables.

Each step checks the command's promise: its exit code; on exit 2, one line on stderr; no library output
(warnings, tracebacks, log lines) on the terminal; and not one byte written into the current folder. Steps
build on each other the way a user's session does (train, then register the documented ``runs:/`` form,
then promote, explain, compress ...), so that no step can pass because an earlier one ran in the same
process: nothing here runs in the test's own process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "civicml"
LIBRARY_OUTPUT = re.compile(r"warning|traceback|\bINFO\b|deprecat", re.I)
ROW = {"description": "Streetlight out on Elm Street since Monday", "district": "Midtown", "channel": "phone",
       "hour": 21, "weekday": 2}


class Journey:
    def __init__(self, root: Path):
        self.cwd = root / "cwd"
        self.cwd.mkdir()
        self.files = root / "files"
        self.files.mkdir()
        self.home = root / "home"
        user_home = root / "user"
        user_home.mkdir()
        drop = ("PYTHONPATH", "CIVICML_HOME", "CIVICML_TRACKING_URI", "CIVICML_TOKEN", "CIVICML_USER")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k not in drop}
        self.env.update(CIVICML_HOME=str(self.home), HOME=str(user_home))
        if "CIVICML_CACHE_DIR" not in os.environ:  # the machine's cache: a fresh one is tested in test_store_seed
            self.env["CIVICML_CACHE_DIR"] = str(Path.home() / ".cache" / "civicml")

    def run(self, *argv: str, want: tuple[int, ...] = (0,), timeout: int = 600) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN), *argv], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        what = f"civicml {' '.join(argv)}"
        assert done.returncode in want, f"{what}: exit {done.returncode}\n{done.stderr[-3000:]}"
        if done.returncode == 2:
            assert done.stderr.count("\n") == 1 and re.match(r"civicml( \w+)?: error: ", done.stderr), \
                (what, done.stderr)
        noise = [line for line in done.stderr.splitlines() if LIBRARY_OUTPUT.search(line)]
        assert not noise, f"{what}: library output on the terminal: {noise[:3]}"
        assert not any(self.cwd.iterdir()), f"{what} wrote into the current folder: {sorted(self.cwd.iterdir())}"
        return done

    @staticmethod
    def last_json(done: subprocess.CompletedProcess) -> dict:
        return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def journey(tmp_path_factory) -> Journey:
    return Journey(tmp_path_factory.mktemp("journey"))


@pytest.mark.slow
def test_text_model_journey(journey):
    """train -> register runs:/ (the documented form) -> list -> promote -> explain -> compress -> audit."""
    trained = journey.last_json(journey.run("train", "--family", "logreg", "--rows", "400", "--json"))
    registered = journey.run("register", f"runs:/{trained['run_id']}/model", "--name", "service-requests-router")
    assert "version 1" in registered.stdout
    assert "service-requests-router" in journey.run("models", "list").stdout
    journey.run("promote", "service-requests-router")
    row = journey.files / "row.json"
    row.write_text(json.dumps(ROW))
    explained = journey.run("explain", "service-requests-router", "--input", str(row))
    assert explained.stdout.strip()
    journey.run("compress", "service-requests-router", "1", "--all")
    audit = journey.run("audit", "service-requests-router").stdout
    assert "promote" in audit.lower()
    journey.run("promote", "no-such-model", want=(2,))
    assert not (journey.home / ".." / "cwd" / "mlflow.db").exists()


@pytest.mark.slow
def test_cnn_int8_variant_from_a_fresh_process(journey):
    """`compress ... --variant int8` on a CNN ended in a traceback in a new process (`No Experiment with id=N
    exists`) and wrote ./mlflow.db: the variant's run was logged through MLflow's process-wide URI."""
    trained = journey.last_json(journey.run("train", "--use-case", "street_scenes", "--family", "cnn", "--rows",
                                            "400", "--param", "epochs=1", "--param", "width=16", "--json"))
    journey.run("register", trained["model_uri"], "--name", "street-scenes-classifier")
    # exit 1: the gate refused the variant (one epoch of training leaves little to keep); never a traceback
    done = journey.run("compress", "street-scenes-classifier", "1", "--variant", "int8", want=(0, 1))
    assert "int8" in done.stdout
    shown = journey.run("models", "show", "street-scenes-classifier", "--json").stdout
    assert "int8" in shown


@pytest.mark.slow
def test_tune_json_shows_progress_on_stderr_and_json_on_stdout(journey):
    done = journey.run("tune", "--n-trials", "2", "--families", "logreg", "--rows", "300", "--json",
                       "--no-register")
    summary = json.loads(done.stdout)  # all of stdout is the one JSON document
    assert summary["n_complete"] == 2
    progress = [line for line in done.stderr.splitlines() if "trials" in line]
    assert progress and progress[-1].split(": ")[1].startswith("2/2 trials"), done.stderr


@pytest.mark.slow
def test_a_terminal_sees_the_bar_and_no_library_output(tmp_path):
    """On a terminal rich draws a live bar; it must not take over stderr (library output then bypassed the
    capture and reached the user). Run under a pseudo-terminal, as a person would."""
    import pty

    journey = Journey(tmp_path)
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal on stdin, stdout and stderr
        os.chdir(journey.cwd)
        os.execve(str(BIN), [str(BIN), "tune", "--n-trials", "2", "--families", "logreg", "--rows", "300",
                             "--no-register"], journey.env)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, screen[-3000:]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert "2/2" in text and "chosen trial" in text, text[-2000:]
    noise = [line for line in text.splitlines() if LIBRARY_OUTPUT.search(line)]
    assert not noise, noise[:5]
    assert not any(journey.cwd.iterdir())


def test_help_and_usage_errors_from_a_fresh_process(journey):
    assert "civicml" in journey.run("--help").stdout
    journey.run("tune", "--n-trials", "many", want=(2,))
    journey.run("no-such-command", want=(2,))
