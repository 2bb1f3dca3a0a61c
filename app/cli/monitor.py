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
    p.add_argument("--policy", help="take the thresholds from this policy file's monitoring: section instead "
                                    "of the governing policy's")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.add_argument("--no-log", action="store_true", help="log no MLflow run (report.json, charts, district maps "
                                                         "in the 'monitoring' experiment)")
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

    def record_answers(self, answers: tuple) -> None:
        """A request's rows at once (``monitoring.rows.masked_rows`` reads it: the model first)."""
        recorder = self.recorders.get(answers[0])
        if recorder is not None:
            recorder.record_answers(answers)

    def record_request(self, request: tuple) -> None:
        """A request's rows as the bytes the server read and wrote (the model first)."""
        recorder = self.recorders.get(request[0])
        if recorder is not None:
            recorder.record_request(request)

    def for_model(self, model: str):
        """The recorder of ``model`` (None: not recorded), for a caller that asks it once."""
        return self.recorders.get(model)

    def reads_requests(self) -> bool:
        return all(getattr(r, "reads_requests", lambda: False)() for r in self.recorders.values())

    def wants(self, answer_id: str, model: str | None = None) -> bool:
        recorder = self.recorders.get(model)
        return recorder is not None and recorder.wants(answer_id)

    def close(self) -> None:
        for recorder in self.recorders.values():
            recorder.close()


def check_record_policy(text: str) -> str:
    """``off``, ``all`` or ``sample=R``, or one :class:`InvalidInput` line (before any model is loaded)."""
    from monitoring import RecordPolicy

    return str(RecordPolicy.parse(text))


def record_policies(names: list[str], policy: str | None, settings) -> dict[str, str]:
    """What ``civicml serve`` records of each model: ``policy`` (``--record``) when given, else each model's
    governing policy's ``monitoring: record`` (off by default)."""
    if policy is not None:
        policy = check_record_policy(policy)
        return {name: policy for name in dict.fromkeys(names)}
    from registry import governing_policy

    return {name: check_record_policy(governing_policy(name, settings=settings).monitoring.record)
            for name in dict.fromkeys(names)}


def serving_recorder(names: list[str], policy: str | None, settings):
    """``(recorder, feedback)`` for ``create_app``: None, None when nothing is recorded. ``policy``: ``--record``,
    or None for each model's policy default (:func:`record_policies`)."""
    from monitoring import add_feedback, open_store, recorder_for

    wanted = {name: p for name, p in record_policies(names, policy, settings).items() if p != "off"}
    if not wanted:
        return None, None
    from serving.recorded import RecordedRequests

    recorders = {name: recorder_for(use_case_of(name, settings), p, settings=settings, reader=RecordedRequests)
                 for name, p in wanted.items()}
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
    from monitoring import audit_alerts, monitor, open_store

    settings = settings_from(args)
    policy = _monitoring_policy(args, settings)  # one line on a bad window or policy file, before any work
    store = open_store(settings=settings)
    try:
        newest, reference = _reference(args.name, settings, policy, store, window=args.window)
        report = monitor(store, reference, window=args.window, policy=policy, model=args.name)
    finally:
        store.close()
    run_id = None
    if not args.no_log:
        from monitoring import log_report
        from registry import boundaries_for

        run_id = log_report(report, settings, metric=policy.metric, boundaries=boundaries_for(dict(newest.tags)),
                            lower_is_better=policy.lower_is_better)
    audited = audit_alerts(report, policy, settings, context={"run_id": run_id} if run_id else None)
    if args.json:
        print(json.dumps({**report.to_dict(), "audit": audited.to_dict(), "run_id": run_id}, default=str))
        return 0
    print(report.text())
    print(_audit_line(audited))
    if run_id:
        print(f"monitoring run: {run_id} (experiment 'monitoring': report.json, charts, district maps)")
    return 0


def _monitoring_policy(args, settings):
    """The thresholds: ``--policy FILE``'s monitoring: section, else the governing policy's."""
    from registry import PromotionPolicy, governing_policy, parse_window

    if args.window:
        parse_window(args.window)
    if args.policy:
        return PromotionPolicy.from_yaml(args.policy).monitoring
    return governing_policy(args.name, settings=settings).monitoring


def _reference(name: str, settings, policy=None, store=None, window: str | None = None):
    """(the newest version, the reference the policy names: the training sample logged with the newest version,
    the held-out set that judges the model, or the answers recorded in the same weeks a year earlier)."""
    from monitoring import RecordMasking
    from registry import versions

    found = versions(name, settings=settings)
    if not found:
        raise InvalidInput(f"model '{name}' has no versions")
    newest = max(found, key=lambda v: int(v.version))
    use_case = use_case_of(name, settings)
    group = RecordMasking.for_use_case(use_case).group if use_case is not None else None
    kind = policy.reference if policy is not None else "training"
    if kind == "last_year":
        from registry import parse_window

        return newest, _last_year(name, store, parse_window(window or policy.window))
    if kind == "held_out":
        return newest, _held_out(name, settings, group)
    return newest, _training_sample(name, newest, settings, group)


def _training_sample(name: str, newest, settings, group):
    import pandas as pd

    from monitoring import Reference
    from registry import resolve

    background = Path(resolve(name, str(newest.version), settings=settings).path) / BACKGROUND
    if not background.exists():
        raise InvalidInput(f"model '{name}' v{newest.version} logged no training sample ({BACKGROUND}) "
                           f"to compare with")
    return Reference(pd.read_parquet(background), time=None, group=group,
                     name=f"the training sample of v{newest.version}")


def _held_out(name: str, settings, group):
    from monitoring import Reference
    from registry import held_out

    chosen = held_out(name, settings=settings)
    return Reference.from_dataset(chosen.dataset, group=group, name=f"the held-out set {chosen.label}")


YEAR = 364 * 86400.0  # 52 weeks: the same weekdays a year earlier


def _last_year(name: str, store, window: float):
    """The answers recorded in the same calendar weeks a year before the newest recorded answer (52 weeks, so
    weekdays line up), four windows either side, with their own times: drift is then calibrated on that
    history."""
    from monitoring import Reference, live_frame

    latest = store.latest_time(model=name)
    if latest is None:
        raise InvalidInput(f"model '{name}' has no recorded answers to compare with a year earlier")
    end, start = latest - YEAR + 4 * window, latest - YEAR - 4 * window
    before = store.read(model=name, since=start, until=end)
    if before.empty:
        raise InvalidInput(f"model '{name}' has no answers recorded a year earlier (reference: last_year); "
                           f"choose reference: training or held_out in the policy's monitoring: section")
    return Reference(live_frame(before), time="time", group="group", name="the same weeks a year earlier")


def _audit_line(audited) -> str:
    line = f"audited: {len(audited.audited)} new alerts" + (
        f" ({audited.already} audited before)" if audited.already else "")
    delivery = audited.delivery
    if delivery is not None:
        where = delivery.get("webhook", "the webhook")
        line += (f"; webhook {where}: NOT delivered ({delivery['error']})" if delivery.get("error")
                 else f"; sent to webhook {where} (HTTP {delivery.get('status')})")
    return line
