"""The ``civicml`` command: a thin layer over the packages' public Python API.

Every CivicML error ends the command with one line on stderr and exit code 2.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from civicml.cli.common import Parser
from civicml.errors import CivicMLError


def build_parser() -> Parser:
    from civicml.cli import compress, console, demo, init, models, server, serving, train, tune

    parser = Parser(prog="civicml", description="ML lifecycle for city services: data -> tuned models -> "
                                                "registry -> live endpoints.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (demo, train, tune, models, server, compress, init, console, serving):
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ INFO lines
    import mlflow  # noqa: F401  (it sets its loggers' levels when imported: import it first, then quiet it)

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # store migrations etc. are not the user's business
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Libraries' advice to their own developers (type hints, ccache, PIR internals) is noise in a CLI.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(mlflow|paddle|optuna)(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CivicMLError as err:
        sys.stderr.write(f"civicml: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("civicml: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
