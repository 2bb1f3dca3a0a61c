"""civicml feedback / monitor: late labels joined to served answers, and the report over what was served.

Also the recorder ``civicml serve --record`` hands to serving (:func:`serving_recorder`): serving takes
anything with ``record(mapping)`` and ``close()`` and never imports ``monitoring``; this floor builds it.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.cli.common import add_store_options, settings_from
from civicml.errors import InvalidInput
from civicml.tags import TAG_USE_CASE

BACKGROUND = "explain/background.parquet"  # the training sample logged with a model (serving.explain)


def add_commands(sub) -> None:
    p = sub.add_parser("feedback", help="join true outcomes to served answers by answer id (late labels)")
    add_store_options(p)
    p.add_argument("name", help="registered model whose answers were recorded")
    p.add_argument("--file", required=True, help="CSV with columns answer_id,outcome (other columns ignored)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("monitor", help="what the recorded answers of NAME say: drift per column and group, live "
                                       "and estimated quality, alerts. Reference: the training sample logged "
                                       "with the newest version (its explanation background; no time column, "
                                       "so not calibrated on history)")
    add_store_options(p)
    p.add_argument("name", help="registered model whose answers were recorded (civicml serve --record)")
    p.add_argument("--window", help="window length: 30m, 12h, 7d, 2w (default: the policy's, 7d)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.set_defaults(func=cmd_monitor)


# -- the recorder civicml serve hands to serving -------------------------------------------------
class ModelRecorders:
    """One recorder per served model (each masks by its own use case's rules), behind one ``record``."""

    def __init__(self, recorders: dict):
        self.recorders = recorders

    def record(self, answer_record) -> None:
        recorder = self.recorders.get(answer_record.get("model"))
        if recorder is not None:
            recorder.record(answer_record)

    def close(self) -> None:
        for recorder in self.recorders.values():
            recorder.close()


def check_record_policy(text: str) -> str:
    """``off``, ``all`` or ``sample=R``, or one :class:`InvalidInput` line (before any model is loaded)."""
    from monitoring import RecordPolicy

    return str(RecordPolicy.parse(text))


def serving_recorder(names: list[str], policy: str, settings):
    """``(recorder, feedback)`` for ``create_app``: None, None when ``policy`` is off."""
    from monitoring import add_feedback, open_store, recorder_for

    if check_record_policy(policy) == "off":
        return None, None
    recorders = {name: recorder_for(use_case_of(name, settings), policy, settings=settings)
                 for name in dict.fromkeys(names)}
    store = open_store(settings=settings)
    return ModelRecorders(recorders), lambda pairs: add_feedback(store, pairs)


def use_case_of(name: str, settings):
    """The use case the newest version of ``name`` was trained for (its ``civicml.use_case`` tag), or None."""
    from projects import get_use_case
    from registry import versions

    for version in reversed(versions(name, settings=settings)):
        tag = version.tags.get(TAG_USE_CASE)
        if tag:
            try:
                return get_use_case(tag)
            except Exception:  # noqa: BLE001 - a use case gone: keep only what is surely not personal
                return None
    return None


# -- the commands --------------------------------------------------------------------------------
def cmd_feedback(args) -> int:
    from monitoring import add_feedback, open_store, read_outcomes
    from registry import authorize, versions

    settings = settings_from(args)
    pairs = read_outcomes(args.file)  # one line on a bad file, before any store is opened
    versions(args.name, settings=settings)  # an unknown model is one line too
    authorize(settings, "feedback", args.name)  # team mode: service or labeller; a refusal is audited
    result = add_feedback(open_store(settings=settings), pairs)
    print(json.dumps(result.to_dict()) if args.json else f"{args.name}: {result.text()}")
    return 0


def cmd_monitor(args) -> int:
    import pandas as pd

    from monitoring import MonitoringPolicy, RecordMasking, Reference, monitor, open_store
    from registry import resolve, versions

    settings = settings_from(args)
    if args.window:
        from monitoring import parse_window

        parse_window(args.window)
    found = versions(args.name, settings=settings)
    if not found:
        raise InvalidInput(f"model '{args.name}' has no versions")
    newest = max(found, key=lambda v: int(v.version))
    background = Path(resolve(args.name, str(newest.version), settings=settings).path) / BACKGROUND
    if not background.exists():
        raise InvalidInput(f"model '{args.name}' v{newest.version} logged no training sample ({BACKGROUND}) "
                           f"to compare with")
    use_case = use_case_of(args.name, settings)
    group = RecordMasking.for_use_case(use_case).group if use_case is not None else None
    reference = Reference(pd.read_parquet(background), time=None, group=group,
                          name=f"the training sample of v{newest.version}")
    report = monitor(open_store(settings=settings), reference, window=args.window,
                     policy=MonitoringPolicy.from_mapping(_monitoring_section(use_case)), model=args.name)
    print(json.dumps(report.to_dict(), default=str) if args.json else report.text())
    return 0


def _monitoring_section(use_case) -> dict | None:
    """The ``monitoring:`` section of the use case's policy file, if it has one."""
    path = getattr(use_case, "policy_file", None)
    if not path or not Path(path).exists():
        return None
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    section = data.get("monitoring") if isinstance(data, dict) else None
    return section if isinstance(section, dict) else None
