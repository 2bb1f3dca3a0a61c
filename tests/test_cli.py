"""The CLI: bad input is one line on stderr and exit code 2, and changes nothing stored.

"Nothing stored" is checked byte for byte: every file under the home folder (the MLflow and Optuna
databases, generated data, artifacts, logs) before and after the command.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from home_bytes import changes, snapshot


def _fails_with_one_line(capsys, argv, fragment) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("civicml: error: "), err
    assert fragment in err, err


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
    _fails_with_one_line(capsys, [*argv, "--home", str(home)], fragment)
    assert snapshot(home) == {}  # nothing created: not even the home folder


# Issue 10's cases, each on a home that already holds a trained model and a study: the home's bytes do not
# change. (The issue's table: before the fix each of these printed a traceback or exited 0, and most wrote
# data, a study or runs first.)
ISSUE_10_CASES = [
    (["train", "--family", "svm", "--param", "C=abc", "--rows", "200"], "parameter 'C': expected a number, got 'abc'"),
    (["train", "--family", "svm", "--param", "kernel=poly", "--rows", "200"], "expected one of ['linear', 'rbf']"),
    (["train", "--family", "logreg", "--param", "char_ngrams=3", "--rows", "200"], "expected one of [True, False]"),
    (["train", "--family", "decision_tree", "--param", "max_depth=2.5", "--rows", "200"], "expected a whole number"),
    (["tune", "--set", "svm.C=abc", "--rows", "200"], "--set svm.C: parameter 'C': expected a number, got 'abc'"),
    (["tune", "--set", "svm.kernel=1:3", "--rows", "200"], "is a choice of ['linear', 'rbf'], not a range"),
    (["tune", "--objectives", "foo:max", "--rows", "200"], "objective 'foo': no training logs such a metric"),
    (["tune", "--objectives", "macro_f1:max,foo:min", "--rows", "200"], "objective 'foo'"),
]


@pytest.fixture(scope="module")
def used_home(tmp_path_factory):
    """A home with one trained model and one finished study in it (trained once for the module)."""
    home = tmp_path_factory.mktemp("used") / "home"
    assert main(["train", "--family", "decision_tree", "--param", "max_depth=3", "--rows", "200",
                 "--home", str(home)]) == 0
    assert main(["tune", "--families", "decision_tree", "--n-trials", "1", "--rows", "200", "--no-register",
                 "--home", str(home)]) == 0
    return home


@pytest.mark.parametrize("argv, fragment", ISSUE_10_CASES)
def test_issue_10_bad_input_changes_no_byte_of_the_home(used_home, capsys, argv, fragment):
    capsys.readouterr()
    before = snapshot(used_home)
    _fails_with_one_line(capsys, [*argv, "--home", str(used_home)], fragment)
    assert changes(before, snapshot(used_home)) == []


@pytest.mark.parametrize("argv, fragment", ISSUE_10_CASES)
def test_issue_10_bad_input_on_a_new_home_creates_nothing(tmp_path, capsys, argv, fragment):
    _fails_with_one_line(capsys, [*argv, "--home", str(tmp_path / "home")], fragment)
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize("inside", [False, True])
def test_a_home_that_is_a_file_is_one_line(tmp_path, capsys, inside):
    path = tmp_path / "home"
    path.write_text("not a folder")
    home = path / "sub" if inside else path
    before = snapshot(tmp_path)
    _fails_with_one_line(capsys, ["train", "--rows", "200", "--home", str(home)], "a file, not a folder")
    assert changes(before, snapshot(tmp_path)) == []


def test_argument_errors_are_one_line_too():
    done = subprocess.run([sys.executable, "-m", "app.cli", "tune", "--n-trials", "many"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "invalid int value: 'many'" in done.stderr


def test_failed_command_leaves_the_store_as_it_was(used_home, capsys):
    before = snapshot(used_home)
    assert main(["train", "--family", "decision_tree", "--param", "depth=3", "--rows", "300",
                 "--home", str(used_home)]) == 2
    assert main(["promote", "service-requests-router", "--home", str(used_home)]) == 2
    assert changes(before, snapshot(used_home)) == []


@pytest.mark.slow
def test_library_noise_goes_to_the_debug_log_and_verbose_shows_it(tmp_path):
    """MiniLM's zero-shot router: loading it made MLflow warn about type hints (in raw colour codes) and
    Paddle log INFO lines, three times for one `civicml train`. Now stderr stays empty, the debug log keeps
    them, and --verbose shows them."""
    home = tmp_path / "home"
    cli = [sys.executable, "-m", "app.cli", "train", "--family", "minilm_zero_shot", "--rows", "200",
           "--home", str(home)]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MLFLOW_")}
    quiet = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr == ""
    assert len(quiet.stdout.strip().splitlines()) == 1 and quiet.stdout.startswith("run ")
    logged = (home / "logs" / "debug.log").read_text()
    assert "Add type hints" in logged and "MiniLM encoder" in logged
    verbose = subprocess.run([*cli, "--verbose"], capture_output=True, text=True, env=env, timeout=600)
    assert verbose.returncode == 0 and "MiniLM encoder" in verbose.stderr
    assert len(verbose.stdout.strip().splitlines()) == 1


def test_default_experiment_keeps_its_artifacts_under_the_home(tmp_path, monkeypatch):
    """MLflow gives the Default experiment (id 0) ./mlruns of whatever folder the store is created in."""
    import mlflow

    from civicml.settings import Settings
    from civicml.tracking import tracking_client

    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env(env={}, home=tmp_path / "home")
    default = tracking_client(settings).get_experiment("0")
    assert default.artifact_location == f"{settings.artifact_root}/0"
    assert default.artifact_location.startswith((tmp_path / "home").as_uri())
    assert not (tmp_path / "mlruns").exists()
    assert mlflow.MlflowClient(settings.tracking_uri).get_experiment("0").artifact_location == \
        default.artifact_location


@pytest.mark.slow
@pytest.mark.postgres
def test_plain_postgresql_urls_work_in_optuna_and_mlflow_commands(postgres_db, tmp_path):
    """SQLAlchemy 2.1 reads postgresql:// as psycopg 3: users' own `optuna` and `mlflow` commands need it."""
    bin_dir = Path(sys.executable).parent
    assert postgres_db.startswith("postgresql://")
    created = subprocess.run([str(bin_dir / "optuna"), "create-study", "--study-name", "mine", "--storage",
                              postgres_db], capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stderr[-2000:]
    listed = subprocess.run([str(bin_dir / "optuna"), "studies", "--storage", postgres_db, "-f", "json"],
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0 and '"mine"' in listed.stdout, listed.stderr[-2000:]
    from conftest import fresh_postgres_database

    with fresh_postgres_database() as tracking_db:  # MLflow and Optuna each keep an alembic_version table
        searched = subprocess.run([str(bin_dir / "mlflow"), "experiments", "search"], capture_output=True,
                                  text=True, timeout=300,
                                  env={**__import__("os").environ, "MLFLOW_TRACKING_URI": tracking_db})
    assert searched.returncode == 0 and "Default" in searched.stdout, searched.stderr[-2000:]
