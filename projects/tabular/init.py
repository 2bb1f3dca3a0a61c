"""A first use-case file from a department's export: ``civicml init NAME --data FILE --target COL``.

Types are guessed from the values (``projects.tabular.detect``); columns that
look like personal data are listed under ``privacy.drop`` and flagged in a
comment, so that nothing personal is trained on by default; a person confirms.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from civicml.errors import InvalidInput, NotFound
from projects.spec import DEFAULT_FAMILIES, did_you_mean, load_spec
from projects.tabular.default_policy import default_policy
from projects.tabular.detect import guess_type, looks_personal
from projects.tabular.integrate import read_table


def write_use_case(name: str, data: list[Path], target: str, task: str | None = None,
                   force: bool = False) -> tuple[Path, dict[str, str]]:
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
    types = {str(c): guess_type(str(c), frame[c]) for c in frame.columns if c != target}
    flagged = {}
    for c in frame.columns:
        if c == target:
            continue
        why = looks_personal(str(c), frame[c])
        if why:
            flagged[str(c)] = why
    target_type = guess_type(target, frame[target])
    if task is None:
        task = "regression" if target_type == "numeric" and frame[target].nunique() > 20 else "classification"
    dates = [c for c, t in types.items() if t == "date" and c not in flagged]
    ids = [c for c, t in types.items() if t == "id"]
    source = {"path": _relative(data[0], folder)}
    if dates:
        source["dates"] = dates
    holdout = ({"split": "time", "column": dates[0], "fraction": 0.2} if dates
               else {"split": "random", "fraction": 0.2, "seed": 0})
    text_or_free = {c: ("text" if "text" in why else why) for c, why in flagged.items()}
    spec = {
        "name": spec_name,
        "description": f"Predict {target} from {data[0].name}.",
        "task": task,
        "target": target,
        "sources": [source],
        "features": {"all_but": ids} if ids else "all",
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
    return path, flagged


def _relative(path: Path, folder: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), folder.resolve())


__all__ = ["write_use_case"]
