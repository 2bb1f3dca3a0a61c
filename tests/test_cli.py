"""The CLI: bad input is one line on stderr and exit code 2, and changes nothing stored."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from civicml.cli import main


def _digest(home: Path) -> str:
    db = home / "mlflow.db"
    return hashlib.sha256(db.read_bytes()).hexdigest() if db.exists() else "none"


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--use-case", "nope"], "unknown use case 'nope'"),
    (["train", "--family", "nope", "--rows", "200"], "no model family 'nope'"),
    (["train", "--family", "logreg", "--param", "Cee=3", "--rows", "200"], "no parameter 'Cee'"),
    (["train", "--family", "logreg", "--param", "C", "--rows", "200"], "expects KEY=VALUE"),
    (["train", "--rows", "10"], "--rows must be at least 50"),
    (["train", "--data", "no/such/file.csv"], "source file not found"),
    (["promote", "no-such-model"], "no registered model named 'no-such-model'"),
    (["rollback", "no-such-model"], "no registered model named 'no-such-model'"),
    (["audit", "no-such-model"], "no registered model named 'no-such-model'"),
    (["serve", "no-such-model"], "no registered model named 'no-such-model'"),
    (["demo", "--trials", "0"], "--trials must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, fragment):
    home = tmp_path / "home"
    before = _digest(home)
    code = main([*argv, "--home", str(home)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("civicml: error: "), err
    assert fragment in err
    assert _digest(home) == before or before == "none" and not (home / "mlruns").exists()


def test_argument_errors_are_one_line_too():
    done = subprocess.run([sys.executable, "-m", "civicml.cli", "tune", "--n-trials", "many"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "invalid int value: 'many'" in done.stderr


def test_failed_command_leaves_the_store_as_it_was(tmp_path, capsys):
    home = tmp_path / "home"
    assert main(["train", "--family", "decision_tree", "--param", "max_depth=3", "--rows", "300",
                 "--home", str(home)]) == 0
    before = _digest(home)
    assert main(["train", "--family", "decision_tree", "--param", "depth=3", "--rows", "300",
                 "--home", str(home)]) == 2
    assert main(["promote", "service-requests-router", "--home", str(home)]) == 2
    assert _digest(home) == before
