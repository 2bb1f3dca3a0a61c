"""A first use-case file from a department's export: ``civicml init NAME --data FILE --target COL``.

Types are guessed from the values (``projects.tabular.detect``) and returned with the reason for each
guess and the column's role (feature, target, id, personal, excluded), which ``civicml init`` prints as
a table; a date or bare-year column makes the held-out set the last 20% of rows in time. Columns that
look like personal data are listed under ``privacy.drop`` and flagged in a
comment, so that nothing personal is trained on by default; a person confirms.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from civicml.errors import InvalidInput, NotFound
from projects.spec import DEFAULT_FAMILIES, did_you_mean, load_spec
from projects.tabular.default_policy import default_policy
from projects.tabular.detect import guess, looks_personal
from projects.tabular.integrate import read_table


@dataclass(frozen=True)
class Column:
    """One row of the guessed schema that ``civicml init`` prints: what a column is taken to be, and why."""

    name: str
    type: str
    reason: str
    role: str  # feature, target, id, personal, excluded


@dataclass(frozen=True)
class Written:
    path: Path
    flagged: dict[str, str]  # column -> why it looks personal
    schema: tuple[Column, ...]


def schema_lines(schema) -> list[str]:
    """The guessed schema as an aligned plain-text table."""
    rows = [("column", "type", "role", "why")] + [(c.name, c.type, c.role, c.reason) for c in schema]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows]


def write_use_case(name: str, data: list[Path], target: str, task: str | None = None,
                   force: bool = False) -> Written:
    folder = Path(name)
    spec_name = folder.name
    path = folder / "usecase.yaml"
    if path.exists() and not force:
        raise InvalidInput(f"{path} exists; edit it, or pass --force to write it again")
    for p in data:
        if not p.exists():
            raise NotFound(f"data file not found: {p}")
    if len(data) > 1:
        raise InvalidInput("init reads one file; add the other sources (and how they join) to usecase.yaml")
    frame = read_table(data[0])
    if target not in frame.columns:
        raise InvalidInput(f"no column '{target}' in {data[0].name}{did_you_mean(target, frame.columns)} "
                           f"(columns: {', '.join(map(str, frame.columns))})")
    guessed = {str(c): guess(str(c), frame[c]) for c in frame.columns if c != target}
    types = {c: t for c, (t, _) in guessed.items()}
    flagged = {}
    for c in frame.columns:
        if c == target:
            continue
        why = looks_personal(str(c), frame[c])
        if why:
            flagged[str(c)] = why
    target_type, target_why = guess(target, frame[target])
    if task is None:
        task = "regression" if target_type == "numeric" and frame[target].nunique() > 20 else "classification"
    dates = [c for c, t in types.items() if t == "date" and c not in flagged]
    years = [c for c, t in types.items() if t == "year" and c not in flagged]
    ids = [c for c, t in types.items() if t == "id"]
    constant = [str(c) for c in frame.columns if c != target and str(c) not in flagged and str(c) not in ids
                and frame[c].nunique() <= 1]
    source = {"path": _relative(data[0], folder)}
    if dates:
        source["dates"] = dates
    times = dates + years  # the last 20% of rows in time order are held out: the model is judged on the future
    holdout = ({"split": "time", "column": times[0], "fraction": 0.2} if times
               else {"split": "random", "fraction": 0.2, "seed": 0})
    text_or_free = {c: ("text" if "text" in why else why) for c, why in flagged.items()}
    schema = [Column(str(target), target_type, target_why, "target")]
    for c, (kind, why) in guessed.items():
        if c in flagged:
            role, why = ("feature", f"{flagged[c]}, masked") if text_or_free[c] == "text" else ("personal", flagged[c])
        elif c in ids:
            role = "id"
        elif c in constant:
            role, why = "excluded", "one value in every row"
        else:
            role = "feature"
        if times and c == times[0]:
            why += "; the time of the held-out split"
        schema.append(Column(c, kind, why, role))
    spec = {
        "name": spec_name,
        "description": f"Predict {target} from {data[0].name}.",
        "task": task,
        "target": target,
        "sources": [source],
        "features": {"all_but": ids + constant} if ids or constant else "all",
        "types": {c: t for c, t in types.items() if c not in flagged or types[c] == "text"},
        "metric": "macro_f1" if task == "classification" else "mae",
        "privacy": {"drop": [c for c, why in text_or_free.items() if why != "text"],
                    "mask": [c for c, why in text_or_free.items() if why == "text"]},
        "holdout": holdout,
        "families": list(DEFAULT_FAMILIES),
        "policy": default_policy(task),
    }
    if task == "forecasting":
        spec["forecast"] = {"time": dates[0] if dates else "CHANGE_ME", "horizon": 1, "lags": [1, 2, 3]}
    header = [f"# use case '{spec_name}', written by `civicml init` from {data[0].name}; edit freely.",
              "# Fields: projects/spec.py. Check with `civicml data --use-case " + str(path) + "`."]
    if flagged:
        header.append("# Personal data? These columns look like it and are dropped (or masked, for free text)"
                      " until you decide:")
        header += [f"#   {c}: {why}" for c, why in flagged.items()]
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join(header) + "\n" + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=110)
    part = path.with_suffix(".yaml.part")
    part.write_text(text)
    try:
        load_spec(part)  # what init writes must read back
    except Exception:
        part.unlink()
        raise
    part.replace(path)
    return Written(path, flagged, tuple(schema))


def _relative(path: Path, folder: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), folder.resolve())


__all__ = ["Column", "Written", "schema_lines", "write_use_case"]
