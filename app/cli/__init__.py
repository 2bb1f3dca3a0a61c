"""The ``civicml`` command: a thin layer over the packages' public Python API.

Every CivicML error ends the command with one line on stderr and exit code 2.
The command shows CivicML's own progress and results only: what libraries
write to stderr while it runs (warnings, their log lines) goes to the debug log
``$CIVICML_HOME/logs/debug.log`` when the command succeeds, and nowhere when it
fails (a failed command changes nothing stored); ``--verbose`` shows it too.

Commands start light: the parser imports no library, and each command imports what it uses when it
runs. MLflow is imported (and its loggers quieted) after parsing, before the command, unless the command
is light: it touches neither MLflow nor use-case files (``set_defaults(light=True)``: ``whoami``,
``token``). ``--help`` and a usage error end before either. tests/test_startup.py checks which
libraries each light command loads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

from app.cli.common import LibraryOutput, Parser, write_debug_log
from civicml import interrupts
from civicml.errors import CivicMLError


_SERVERS = ("serve", "server", "console")


def build_parser() -> Parser:
    from app.cli import (compress, console, demo, init, models, monitor, retrain, review, score, server, serving,
                         train, transparency, tune)

    parser = Parser(prog="civicml", description="ML lifecycle for city services: data -> tuned models -> "
                                                "registry -> live endpoints.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show what libraries print (warnings, log lines); otherwise kept in the debug log")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (demo, train, tune, models, server, compress, init, console, serving, score, monitor, retrain,
                   transparency, review):
        module.add_commands(sub)
    return parser


def quiet_mlflow() -> None:
    """Import MLflow and lower its loggers to warnings: store migrations etc. are not the user's business.
    MLflow sets its loggers' levels when it is imported, so this imports it first, then quiets it."""
    import mlflow  # noqa: F401

    logging.getLogger("mlflow").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ INFO lines
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = build_parser()
    args = parser.parse_args(argv)  # --help and usage errors end here, having imported no library
    light = bool(getattr(args, "light", False))
    if not light:
        quiet_mlflow()
    stderr = sys.stderr
    # Long-running servers show their libraries' lines (uvicorn's address and access log); a command says
    # so with set_defaults(library_output="show").
    show = getattr(args, "library_output", "show" if args.command in _SERVERS else "quiet") == "show"
    with LibraryOutput(verbose=show or bool(getattr(args, "verbose", False))) as library, \
            warnings.catch_warnings(), contextlib.ExitStack() as scope:
        if getattr(args, "home", None) and args.command not in _SERVERS and not light:
            from projects.tabular import use_case_home  # a use-case file's salt and inline policy: under --home

            scope.enter_context(use_case_home(args.home))
        warnings.simplefilter("default")  # each warning once per place, into the library output
        if show and not getattr(args, "verbose", False):
            # a server shows its libraries' log lines (uvicorn's address, access log), but libraries' deprecation
            # notices (SQLAlchemy's about MLflow's store) are for their developers, not for the city's
            warnings.simplefilter("ignore", DeprecationWarning)
        scope.enter_context(interrupts.catching())  # a Ctrl-C a library drops still stops the long work
        try:
            code = int(args.func(args) or 0)
        except CivicMLError as err:
            stderr.write(f"civicml: error: {err}\n")
            return 2
        except KeyboardInterrupt:
            stderr.write("civicml: interrupted\n")
            return 130
    if code == 0:
        write_debug_log(args, library.text())
    return code


if __name__ == "__main__":
    raise SystemExit(main())
