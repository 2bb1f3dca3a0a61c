"""What every subcommand shares: global options, settings, data sources, error reporting."""

from __future__ import annotations

import argparse
import io
import sys

from civicml.errors import InvalidInput
from civicml.settings import Settings


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str):  # noqa: D401
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def add_store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("stores")
    group.add_argument("--home", help="working folder of the embedded default (env CIVICML_HOME)")
    group.add_argument("--tracking-uri", help="MLflow tracking/registry URI, e.g. http://host:5000 "
                                              "(env CIVICML_TRACKING_URI; default sqlite under --home)")
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show what libraries print (warnings, log lines); otherwise kept in the debug log")


def settings_from(args) -> Settings:
    """The settings of the command's options and environment; a home that is not a folder is refused here,
    before anything reads or writes it."""
    overrides = {}
    if getattr(args, "home", None):
        overrides["home"] = args.home
    if getattr(args, "tracking_uri", None):
        overrides["tracking_uri"] = args.tracking_uri
    if getattr(args, "storage", None):
        overrides["optuna_storage"] = args.storage
    settings = Settings.from_env(**overrides)
    _check_home(settings.home)
    return settings


def _check_home(home) -> None:
    from pathlib import Path

    for folder in (Path(home), *Path(home).parents):
        if folder.exists():
            if not folder.is_dir():
                what = "is" if folder == Path(home) else f"is inside {folder}, which is"
                raise InvalidInput(f"home {home} {what} a file, not a folder (--home / CIVICML_HOME)")
            return


class LibraryOutput(io.TextIOBase):
    """``sys.stderr`` while a command runs: what libraries write there (warnings, their log handlers) is kept
    for the debug log, and shown too with ``--verbose``. CivicML's own lines go to the real stderr.

    Log handlers a library creates meanwhile keep this object as their stream; after the command it
    passes what they write on to the real stderr."""

    LIMIT = 2_000_000  # characters kept for the debug log

    def __init__(self, verbose: bool = False):
        super().__init__()
        self.verbose = verbose
        self._kept: list[str] = []
        self._size = 0
        self._real = None
        self._active = False

    def __enter__(self) -> "LibraryOutput":
        self._real, sys.stderr = sys.stderr, self
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        self._active = False
        if sys.stderr is self:
            sys.stderr = self._real

    @property
    def real(self):
        """The user's stderr, where CivicML's own lines go (see :func:`user_stderr`)."""
        return self._real

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:  # a child process given our stderr writes to the real one
        return self._real.fileno()

    def write(self, text: str) -> int:
        if not self._active or self.verbose:
            self._real.write(text)
        if self._active and self._size < self.LIMIT:
            self._kept.append(text)
            self._size += len(text)
        return len(text)

    def flush(self) -> None:
        if self._real is not None:
            self._real.flush()

    def text(self) -> str:
        return "".join(self._kept)


def user_stderr():
    """The stream for CivicML's own lines on stderr (notes, warnings): the real stderr, also while a
    :class:`LibraryOutput` holds ``sys.stderr`` for libraries' output."""
    stream = sys.stderr
    return stream.real if isinstance(stream, LibraryOutput) and stream.real is not None else stream


def write_debug_log(args, text: str) -> None:
    """Append a successful command's library output to ``$CIVICML_HOME/logs/debug.log`` (if the home exists)."""
    import datetime

    if not text.strip():
        return
    try:
        home = settings_from(args).home
    except Exception:  # noqa: BLE001  the command succeeded; its debug log is not worth failing it
        return
    if not home.is_dir():
        return
    folder = home / "logs"
    folder.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with open(folder / "debug.log", "a", encoding="utf-8") as handle:
        handle.write(f"--- {stamp} civicml {getattr(args, 'command', '')}\n{text}")


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--use-case", default="service_requests",
                        help="use case name, or a path to a use-case YAML (default service_requests)")
    parser.add_argument("--data", nargs="+", metavar="PATH",
                        help="your own source files or folders; default: generate synthetic sources")
    parser.add_argument("--rows", type=int, default=None, help="rows to generate when --data is not given")
    parser.add_argument("--seed", type=int, default=0, help="random seed (data generation, splits, samplers)")


def load_data(args, settings: Settings, use_case):
    """The Dataset named by --data, or generated sources cached under CIVICML_HOME/data."""
    from projects import load_dataset

    if args.data:
        return load_dataset(use_case, args.data)
    rows = args.rows or use_case.default_size
    if rows < 50:
        raise InvalidInput(f"--rows must be at least 50, got {rows}")
    folder = settings.ensure_home() / "data" / use_case.name / f"n{rows}-seed{args.seed}"
    return load_dataset(use_case, use_case.generate_sources(folder, n=rows, seed=args.seed))


def parse_params(pairs: list[str] | None) -> dict:
    """``KEY=VALUE`` pairs; values read as YAML scalars (numbers, booleans, strings)."""
    import yaml

    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise InvalidInput(f"--param expects KEY=VALUE, got '{pair}'")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def console():
    from rich.console import Console

    return Console(stderr=False, highlight=False, soft_wrap=True)
