"""What every subcommand shares: global options, settings, data sources, error reporting."""

from __future__ import annotations

import argparse
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


def settings_from(args) -> Settings:
    overrides = {}
    if getattr(args, "home", None):
        overrides["home"] = args.home
    if getattr(args, "tracking_uri", None):
        overrides["tracking_uri"] = args.tracking_uri
    if getattr(args, "storage", None):
        overrides["optuna_storage"] = args.storage
    return Settings.from_env(**overrides)


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


def holdout_for(use_case, settings: Settings, paths: list[str] | None = None):
    """The held-out set a promotion re-evaluates on: given files, or the use case's own (fixed seed)."""
    from projects import load_dataset

    if paths:
        return load_dataset(use_case, paths)
    return use_case.holdout(settings.ensure_home() / "data" / use_case.name / "holdout")


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
