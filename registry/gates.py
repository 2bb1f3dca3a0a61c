"""Promotion gates: each looks at a candidate (and the current champion) and gives a verdict.

Gates re-evaluate models on a held-out set at promotion time; logged metrics are
never trusted alone.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from registry import equity
from registry.store import LocalModel, ModelVersion
from registry.use_cases import task_of, unseen_phrasings_holdout, use_case_named
from registry import transparency_file
from civicml.tags import TAG_REGISTERED_AT, TAG_USE_CASE


class _Metrics:
    """The metric names a policy may use: ``projects.metrics``, imported when first asked (serving imports
    registry and must not load training code)."""

    def __contains__(self, name) -> bool:
        from projects.metrics import known

        return known(str(name))

    def __iter__(self):
        from projects.metrics import OWN

        return iter(OWN)


METRICS = _Metrics()


def lower_is_better(metric: str) -> bool:
    from projects import metrics

    return metrics.lower_is_better(metric)


@dataclass(frozen=True)
class GateVerdict:
    gate: str
    passed: bool
    figure: float | None
    threshold: float | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "figure": self.figure, "threshold": self.threshold,
                "detail": self.detail}


def predicted_labels(output) -> np.ndarray:
    """Labels (or values) from whatever a pyfunc returns: array, Series, or a frame with a label column."""
    if isinstance(output, pd.DataFrame):
        for column in ("label", "prediction", "predictions"):
            if column in output.columns:
                return output[column].to_numpy()
        return output.iloc[:, 0].to_numpy()
    if isinstance(output, pd.Series):
        return output.to_numpy()
    return np.asarray(output).reshape(len(output), -1)[:, 0] if np.ndim(output) > 1 else np.asarray(output)


def score(metric: str, y_true, y_pred) -> float:
    from projects.metrics import compute

    return compute(metric, y_true, y_pred)


@dataclass
class PromotionContext:
    """What gates look at; model evaluations are computed once and shared by all gates."""

    name: str
    candidate: LocalModel
    champion: LocalModel | None
    holdout: pd.DataFrame | None
    target: str | None
    approvals: tuple[str, ...] = ()  # distinct approvers of the candidate version
    holdout_name: str | None = None
    holdout_fingerprint: str | None = None
    # the version the alias serves now, verified or not (``champion`` is None when its files fail verification):
    # its signature recorded at registration is the input contract
    serving: ModelVersion | None = None
    # figures on other held-out sets, for the model card: what they say -> {metric, value, set, rows}
    also: dict = field(default_factory=dict)
    # material changes besides the candidate's registration (the governing policy's recording): what -> when
    # (ISO 8601); people's review of a high-risk model must be newer (HumanAccountability)
    changes: dict = field(default_factory=dict)
    # the most recent labelled window of served traffic (inputs and ``target``), handed to the promotion
    # (registry.lifecycle.PromoteOptions.recent): what the ``recent_window`` gate judges on
    recent: pd.DataFrame | None = None
    recent_name: str | None = None
    _scores: dict = field(default_factory=dict)
    _models: dict = field(default_factory=dict)
    _predictions: dict = field(default_factory=dict)
    _equity: dict = field(default_factory=dict)  # (equity spec, metric) -> registry.equity.EquityReport

    def model(self, which: LocalModel):
        key = which.version.version
        if key not in self._models:
            import mlflow.pyfunc

            self._models[key] = mlflow.pyfunc.load_model(str(which.path))
        return self._models[key]

    def features(self, which: LocalModel, holdout: pd.DataFrame | None = None,
                 target: str | None = None) -> pd.DataFrame:
        """The model's input for every held-out row (of ``holdout``, default the promotion's): its signature's
        columns, or for a tensor signature a frame of one array column (indexed 0..n-1; rows by ``iloc``)."""
        holdout, target = (self.holdout, self.target) if holdout is None else (holdout, target)
        schema = self.model(which).metadata.get_input_schema()
        names = schema.input_names() if schema is not None and not schema.is_tensor_spec() else None
        frame = holdout[names] if names else holdout.drop(columns=[target])
        return frame.reset_index(drop=True)

    def as_input(self, which: LocalModel, rows: pd.DataFrame):
        """``rows`` of :meth:`features` in the form the model takes: a tensor model gets one stacked array."""
        schema = self.model(which).metadata.get_input_schema()
        if schema is not None and schema.is_tensor_spec() and rows.shape[1] == 1:
            spec = schema.inputs[0]
            return np.stack([np.asarray(v, dtype=spec.type) for v in rows.iloc[:, 0]])
        return rows

    def predictions(self, which: LocalModel) -> np.ndarray:
        """``which``'s labels (or values) for every held-out row, computed once."""
        key = which.version.version
        if key not in self._predictions:
            if self.holdout is None or self.target is None:
                raise ValueError("this gate needs a held-out data set")
            features = self.features(which)
            self._predictions[key] = predicted_labels(self.model(which).predict(self.as_input(which, features)))
        return self._predictions[key]

    def evaluate(self, which: LocalModel, metric: str) -> float:
        key = (which.version.version, metric)
        if key not in self._scores:
            self._scores[key] = score(metric, self.holdout[self.target].to_numpy(), self.predictions(which))
        return self._scores[key]


class Gate(abc.ABC):
    """One condition of a promotion policy. ``check`` never changes anything."""

    name: str

    @property
    def title(self) -> str:
        """The gate as audit records and the CLI name it."""
        return self.name

    @abc.abstractmethod
    def check(self, ctx: PromotionContext) -> GateVerdict: ...

    def verdict(self, ctx: PromotionContext) -> GateVerdict:
        """``check``, failing closed: a gate that cannot compute its figure refuses."""
        try:
            return self.check(ctx)
        except Exception as err:  # noqa: BLE001 - any failure to evaluate is a refusal, with its reason
            return GateVerdict(self.title, False, None, None, f"could not evaluate: {type(err).__name__}: {err}")


def _better_or_equal(metric: str, a: float, b: float) -> bool:
    return a <= b if lower_is_better(metric) else a >= b


@dataclass
class MetricThreshold(Gate):
    """The candidate's ``metric`` on the held-out set reaches ``threshold``."""

    metric: str
    threshold: float
    name: str = "threshold"

    @property
    def title(self) -> str:
        return f"{self.metric} {'<=' if lower_is_better(self.metric) else '>='} {self.threshold}"

    def check(self, ctx):
        value = ctx.evaluate(ctx.candidate, self.metric)
        ok = _better_or_equal(self.metric, value, self.threshold)
        return GateVerdict(self.title, ok, value, self.threshold,
                           f"candidate {self.metric} {value:.4f} on held-out set")


@dataclass
class NoRegression(Gate):
    """The candidate is not worse than the champion by more than ``tolerance``, both scored on the same data."""

    metric: str
    tolerance: float = 0.0
    name: str = "no_regression"

    @property
    def title(self) -> str:
        return f"{self.metric} vs champion"

    def check(self, ctx):
        candidate = ctx.evaluate(ctx.candidate, self.metric)
        if ctx.champion is None:
            return GateVerdict(f"{self.metric} vs champion", True, candidate, None, "no current champion")
        champion = ctx.evaluate(ctx.champion, self.metric)
        limit = champion + self.tolerance if lower_is_better(self.metric) else champion - self.tolerance
        ok = _better_or_equal(self.metric, candidate, limit)
        return GateVerdict(f"{self.metric} vs champion", ok, candidate, limit,
                           f"candidate {candidate:.4f} vs champion v{ctx.champion.version.version} {champion:.4f}"
                           f" (tolerance {self.tolerance})")


@dataclass
class HoldoutIdentity(Gate):
    """The held-out set is the one the policy names, byte for byte (by fingerprint)."""

    name_: str | None
    fingerprint: str
    name: str = "holdout data set"

    def check(self, ctx):
        actual = ctx.holdout_fingerprint
        ok = actual is not None and actual == self.fingerprint
        return GateVerdict(self.title, ok, None, None,
                           f"held-out set {ctx.holdout_name or '?'} fingerprint {str(actual)[:12]} "
                           f"{'matches' if ok else 'differs from'} the policy's {self.fingerprint[:12]}")


def _schema_columns(schema) -> dict[str, tuple[str, bool]] | None:
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return None
    out = {}
    for spec in schema.inputs:
        described = spec.to_dict()
        required = bool(described.pop("required", True))
        described.pop("name", None)
        out[spec.name] = (str(described.get("type")) if set(described) == {"type"} else repr(described), required)
    return out


def signature_breaks(old, new) -> list[str]:
    """What consumers of a model with signature ``old`` would see break with ``new`` ([] if nothing)."""
    if old is None:
        return []
    if new is None:
        return ["the candidate has no signature; the champion's consumers rely on one"]
    problems = []
    old_cols, new_cols = _schema_columns(old.inputs), _schema_columns(new.inputs)
    if old_cols is None or new_cols is None:
        if old.inputs.to_dict() != new.inputs.to_dict():
            problems.append("input schema changed")
    else:
        for name, (kind, required) in new_cols.items():
            if name not in old_cols:
                if required:
                    problems.append(f"requires new input column '{name}' ({kind}) that consumers do not send")
            elif old_cols[name][0] != kind:
                problems.append(f"input column '{name}' changes type {old_cols[name][0]} -> {kind}")
            elif required and not old_cols[name][1]:
                problems.append(f"input column '{name}' becomes required")
    if old.outputs is not None and new.outputs is not None and old.outputs.to_dict() != new.outputs.to_dict():
        problems.append(f"output schema changes {old.outputs.to_dict()} -> {new.outputs.to_dict()}")
    return problems


@dataclass
class SignatureCompatible(Gate):
    """Consumers of the current champion keep working: no new required input, no changed type, same outputs.

    The contract is the champion's signature as recorded in the registry at its registration
    (:attr:`registry.store.ModelVersion.signature`), not its files: a champion whose files fail
    verification still holds its clients' contract. Only ``promote --force`` passes a break
    (``forceable``)."""

    name: str = "signature compatible"
    forceable = True  # the one gate `promote --force` may pass (registry.lifecycle._judge)

    def check(self, ctx):
        current = ctx.serving or (ctx.champion.version if ctx.champion else None)
        if current is None:
            return GateVerdict(self.title, True, None, None, "no current champion")
        intact = ctx.champion is not None and ctx.champion.version.version == current.version
        try:
            recorded = current.signature
        except KeyError:  # registered before signatures were recorded: only its verified files can say
            if not intact:
                raise ValueError(f"champion v{current.version} records no signature and its files fail "
                                 f"verification: its input contract cannot be read") from None
            old = ctx.model(ctx.champion).metadata.signature
        else:
            from mlflow.models.signature import ModelSignature

            old = ModelSignature.from_dict(recorded) if recorded else None
        new = ctx.model(ctx.candidate).metadata.signature
        problems = signature_breaks(old, new)
        source = "" if intact else " (its files fail verification; the contract is its signature recorded at " \
                                   "registration)"
        detail = "; ".join(problems) + source if problems else \
            f"inputs of champion v{current.version}{source} accepted unchanged"
        return GateVerdict(self.title, not problems, float(len(problems)), 0.0, detail)


@dataclass
class LatencyBudget(Gate):
    """p95 of single-row predictions, measured now on held-out rows, within ``budget_ms``.

    Each row is timed ``repeats`` times and counts with its fastest time: a wall clock on a shared host also
    times whatever else ran meanwhile (other jobs, a test suite's neighbours), and the fastest of a few runs
    is the model's own cost. The p95 across rows still catches rows that are slow every time (long texts,
    a model that is slow on some inputs)."""

    budget_ms: float
    rows: int = 50
    repeats: int = 3
    warmup: int = 3
    name: str = "latency p95"

    @property
    def title(self) -> str:
        return f"latency p95 <= {self.budget_ms} ms"

    def check(self, ctx):
        model = ctx.model(ctx.candidate)
        X = ctx.features(ctx.candidate)
        n = min(self.rows, len(X))
        if n == 0:
            raise ValueError("no held-out rows to time")
        for i in range(min(self.warmup, n)):
            model.predict(ctx.as_input(ctx.candidate, X.iloc[[i]]))
        times = []
        for i in range(n):
            row = ctx.as_input(ctx.candidate, X.iloc[[i]])
            fastest = float("inf")
            for _ in range(max(1, self.repeats)):
                started = time.perf_counter()
                model.predict(row)
                fastest = min(fastest, (time.perf_counter() - started) * 1000)
            times.append(fastest)
        p95 = float(np.percentile(times, 95))
        each = f", each the fastest of {self.repeats}" if self.repeats > 1 else ""
        return GateVerdict(self.title, p95 <= self.budget_ms, p95, self.budget_ms,
                           f"p95 {p95:.2f} ms over {n} single-row predictions{each} (median {np.median(times):.2f} ms)")


@dataclass
class ApprovalCount(Gate):
    """At least ``required`` distinct release managers approved this very version."""

    required: int
    name: str = "approvals"

    @property
    def title(self) -> str:
        return f"approvals >= {self.required}"

    def check(self, ctx):
        got = sorted(set(ctx.approvals))
        return GateVerdict(self.title, len(got) >= self.required, float(len(got)), float(self.required),
                           f"approved by {', '.join(got) if got else 'nobody'} "
                           f"({len(got)} of {self.required} required)")


# -- gates against what a model should at least do --------------------------------------------------------
@dataclass
class BeatBaseline(Gate):
    """The candidate beats the trivial baseline on the held-out set by ``margin``. The baseline learns from the
    training labels (recorded with the model: ``baseline`` in its metadata) and is the better of: the majority
    class for every row, or guessing by the class frequencies (its mean over seeded draws; on macro-F1 guessing
    beats the majority class: 0.50 against 0.48 with 92% of rows in one class); for regression the median
    (``mae``) or the mean. A model
    that records none is compared with the held-out labels' own, which are at least as hard to beat.
    ``relative``: the margin is a fraction of the baseline's figure (errors such as ``mae`` are in the target's
    units)."""

    metric: str
    margin: float = 0.02
    relative: bool = False
    name: str = "beat_baseline"

    @property
    def title(self) -> str:
        return f"{self.metric} vs baseline"

    def check(self, ctx):
        from projects.metrics import baseline_answers, baseline_facts

        candidate = ctx.evaluate(ctx.candidate, self.metric)
        meta = ctx.model(ctx.candidate).metadata.metadata or {}
        y = ctx.holdout[ctx.target].to_numpy()
        facts, learnt = meta.get("baseline"), "training labels"
        if not isinstance(facts, dict) or not facts:
            task = task_of(ctx.candidate.version.tags, meta)
            facts, learnt = baseline_facts("classification" if task == "classification" else "regression", y), \
                "held-out labels (the model records no training baseline)"
        figures = {}
        for how, draws in baseline_answers(facts, self.metric, len(y)).items():
            if "majority" in facts and y.dtype != object:  # the labels' own type (a string of any length)
                draws = [a.astype(str if y.dtype.kind == "U" else y.dtype) for a in draws]
            figures[how] = float(np.mean([score(self.metric, y, answers) for answers in draws]))
        pick = min if lower_is_better(self.metric) else max
        how = pick(figures, key=figures.get)
        baseline = figures[how]
        step = self.margin * abs(baseline) if self.relative else self.margin
        limit = baseline - step if lower_is_better(self.metric) else baseline + step
        ok = _better_or_equal(self.metric, candidate, limit) and candidate != baseline
        margin = f"{self.margin:g} of it" if self.relative else f"{self.margin:g}"
        return GateVerdict(self.title, ok, candidate, limit,
                           f"{self.metric} {candidate:.4f} vs baseline {baseline:.4f}, margin {margin} "
                           f"(the baseline: {how}, learnt from the {learnt})")


@dataclass
class UnseenPhrasings(Gate):
    """The candidate reaches ``spec.min_value`` on a second held-out set worded as no training set is (the use
    case's pool of never-seen phrasings; which set: :func:`registry.use_cases.unseen_phrasings_holdout`). The
    figure goes on the promotion's model card beside the held-out set's."""

    spec: Any  # registry.policy.UnseenSpec
    name: str = "unseen phrasings"

    @property
    def title(self) -> str:
        op = "<=" if lower_is_better(self.spec.metric) else ">="
        return f"{self.spec.metric} on unseen phrasings {op} {self.spec.min_value}"

    def check(self, ctx):
        frame, target, label = unseen_phrasings_holdout(ctx.candidate.version.tags.get(TAG_USE_CASE),
                                                        self.spec)
        which = ctx.candidate
        rows = ctx.features(which, frame, target)
        predicted = predicted_labels(ctx.model(which).predict(ctx.as_input(which, rows)))
        value = score(self.spec.metric, frame[target].to_numpy(), predicted)
        ctx.also["wording it never saw"] = {"metric": self.spec.metric, "value": value, "set": label,
                                            "rows": len(frame)}
        ok = _better_or_equal(self.spec.metric, value, self.spec.min_value)
        return GateVerdict(self.title, ok, value, self.spec.min_value,
                           f"candidate {self.spec.metric} {value:.4f} on {len(frame)} requests worded as no "
                           f"training set is ({label})")


# -- a gate that waits for people -------------------------------------------------------------------------------
@dataclass
class HumanAccountability(Gate):
    """A high-risk model (the policy's ``accountability:``, a :class:`registry.policy.AccountabilitySpec`) is
    promoted only when people have written the ``required`` fields of its use case's transparency.yaml and
    reviewed them (``reviewed:``) after the candidate's registration and the policy's recording, within
    ``max_age_days``: :func:`registry.transparency_file.accountability_problems`. No figure to measure: the
    verdict lists what people still owe (docs/accountability.md)."""

    spec: Any  # registry.policy.AccountabilitySpec
    name: str = "accountability"

    @property
    def title(self) -> str:
        return "people's accountability fields (high risk)"

    def check(self, ctx):
        tags = ctx.candidate.version.tags
        use_case = use_case_named(tags.get(TAG_USE_CASE))
        if use_case is None:
            raise ValueError("the candidate records no use case: its transparency.yaml cannot be found")
        human = transparency_file.read(use_case)
        changes = {f"registration of version {ctx.candidate.version.version}": tags.get(TAG_REGISTERED_AT),
                   **ctx.changes}
        problems = transparency_file.accountability_problems(self.spec, human, changes)
        detail = "; ".join(problems) or (f"{', '.join(self.spec.required)} written in {human.path}, reviewed "
                                         f"{human.reviewed.date()}" + (f" by {human.reviewed_by}"
                                                                      if human.reviewed_by else ""))
        return GateVerdict(self.title, not problems, float(len(problems)), 0.0, detail)
# -- equity across groups (registry.equity) ---------------------------------------------------------------
def equity_report(ctx: PromotionContext, spec: Any, metric: str) -> equity.EquityReport:
    """The candidate's :class:`registry.equity.EquityReport` on the promotion's held-out set, measured once
    for both equity gates (with the champion's figures when there is one and the policy bounds regressions);
    the model card shows it (``ctx.also``)."""
    key = (spec, metric)
    if key not in ctx._equity:
        if ctx.holdout is None or ctx.target is None:
            raise ValueError("this gate needs a held-out data set")
        groups = equity.group_labels(ctx.holdout, spec.by)
        champion = ctx.predictions(ctx.champion) if ctx.champion is not None and \
            spec.max_group_regression is not None else None
        report = equity.measure(spec, metric, ctx.holdout[ctx.target].to_numpy(), ctx.predictions(ctx.candidate),
                                groups, champion)
        ctx._equity[key] = report
        ctx.also[f"equity by {spec.by}"] = {**report.to_dict(), "champion_version": (
            ctx.champion.version.version if champion is not None else None), "min_ratio": spec.min_ratio,
            "max_group_regression": spec.max_group_regression}
    return ctx._equity[key]


def _span(interval) -> str:
    return f"{interval[0]:.2f}-{interval[1]:.2f}"


def _small_groups(report: equity.EquityReport) -> str:
    small = report.small
    if not small:
        return ""
    return f"; not judged (under {report.min_count} rows): " + ", ".join(
        f"{g.group} {g.rows} rows {report.metric} {g.value:.2f}" for g in small)


def _judged(report: equity.EquityReport, spec: Any, interval: str) -> list:
    """The groups judged with an ``interval`` (``ratio_interval``, ``worse_interval``); none: the gate cannot judge."""
    judged = [g for g in report.judged if getattr(g, interval) is not None]
    if not judged:
        raise ValueError(f"no {spec.by} has {spec.min_count} held-out rows: nothing to judge "
                         f"equity on{_small_groups(report)}")
    return judged


@dataclass
class EquityRatio(Gate):
    """Each group of ``spec.by`` (with ``spec.min_count`` held-out rows) reaches ``spec.min_ratio`` of the best
    group's ``metric``; a group is refused only when its interval lies clearly below (upper bound < floor)."""

    spec: Any  # registry.policy.EquitySpec
    metric: str
    name: str = "equity ratio"

    @property
    def title(self) -> str:
        return f"{self.metric} per {self.spec.by}: ratio to the best >= {self.spec.min_ratio}"

    def check(self, ctx):
        report = equity_report(ctx, self.spec, self.metric)
        judged = _judged(report, self.spec, "ratio_interval")
        floor, pct = self.spec.min_ratio, f"{report.confidence:.0%}"
        below = report.below_ratio(floor)
        lowest = min(judged, key=lambda g: g.ratio_interval[1])
        best = next(g for g in judged if g.group == report.best)
        shown = below or [lowest]
        detail = ("; ".join(f"{g.group} {g.ratio:.2f} of the best ({pct} interval {_span(g.ratio_interval)}, "
                            f"{self.metric} {g.value:.2f} on {g.rows} rows)" for g in shown)
                  + (f": clearly under {floor}" if below else f": the nearest the floor {floor}")
                  + f"; the best: {best.group} {self.metric} {best.value:.2f} on {best.rows} rows"
                  + _small_groups(report))
        return GateVerdict(self.title, not below, lowest.ratio_interval[1], floor, detail)


@dataclass
class EquityRegression(Gate):
    """No group of ``spec.by`` (with ``spec.min_count`` held-out rows) does worse than under the champion by
    more than ``spec.max_group_regression``, both models scored on the same resampled rows; a group is refused
    only when the lower bound of its worsening is above the margin."""

    spec: Any  # registry.policy.EquitySpec
    metric: str
    name: str = "equity vs champion"

    @property
    def title(self) -> str:
        return f"{self.metric} per {self.spec.by} vs champion"

    def check(self, ctx):
        report = equity_report(ctx, self.spec, self.metric)
        margin = self.spec.max_group_regression
        if ctx.champion is None:
            return GateVerdict(self.title, True, None, margin, "no current champion" + _small_groups(report))
        judged = _judged(report, self.spec, "worse_interval")
        worse = report.regressed(margin)
        most = max(judged, key=lambda g: g.worse_interval[0])
        shown, pct = worse or [most], f"{report.confidence:.0%}"
        detail = ("; ".join(f"{g.group} {self.metric} {g.value:.2f} vs {g.champion:.2f} under champion "
                            f"v{ctx.champion.version.version} ({g.worse_by:+.2f} worse, {pct} interval "
                            f"{_span(g.worse_interval)}, {g.rows} rows)" for g in shown)
                  + (f": clearly worse by more than {margin}" if worse else f": the nearest the margin {margin}")
                  + _small_groups(report))
        return GateVerdict(self.title, not worse, most.worse_interval[0], margin, detail)


# -- a gate on today's traffic ------------------------------------------------------------------------------------
@dataclass
class RecentWindow(Gate):
    """The candidate judged on the most recent labelled window of served traffic too, beside the held-out set:
    not worse than the champion on the same rows by more than ``spec.max_regression`` (and at least
    ``spec.min_value``, if given). The rows are handed to the promotion (``PromoteOptions(recent=...)``): the
    registry never reads the monitoring store. With fewer than ``spec.min_count`` labelled rows the gate
    cannot judge, and refuses saying so (as every gate that cannot evaluate does): a policy that names
    ``recent_window`` asks for today's traffic to be judged. Without a champion there is nothing to regress
    from: it passes, saying so (the first champion has served no traffic yet)."""

    spec: Any  # registry.policy.RecentWindowSpec
    metric: str  # the spec's metric, else the policy's
    name: str = "recent window"

    @property
    def title(self) -> str:
        return f"{self.metric} on the recent {self.spec.window} window vs champion"

    def check(self, ctx):
        frame, target = ctx.recent, ctx.target
        if frame is None or target is None:
            raise ValueError(f"no labelled window of served traffic was handed to the promotion (civicml promote "
                             f"builds the most recent {self.spec.window} from the monitoring store)")
        n, where = len(frame), ctx.recent_name or f"the most recent {self.spec.window} window"
        if n < self.spec.min_count:
            return GateVerdict(self.title, False, float(n), float(self.spec.min_count),
                               f"not judged: {n} labelled answers in {where}, {self.spec.min_count} needed "
                               f"(refused until enough labels arrive; recent_window.min_count sets the number)")
        candidate = _score_on(ctx, ctx.candidate, frame, target, self.metric)
        ctx.also["today's traffic"] = {"metric": self.metric, "value": candidate, "set": where, "rows": n}
        floor = self.spec.min_value
        above = floor is None or _better_or_equal(self.metric, candidate, floor)
        if ctx.champion is None:
            return GateVerdict(self.title, above, candidate, floor,
                               f"candidate {candidate:.4f} on {n} labelled answers ({where}); no current champion")
        champion = _score_on(ctx, ctx.champion, frame, target, self.metric)
        tolerance = self.spec.max_regression
        limit = champion + tolerance if lower_is_better(self.metric) else champion - tolerance
        ok = above and _better_or_equal(self.metric, candidate, limit)
        return GateVerdict(self.title, ok, candidate, limit,
                           f"candidate {candidate:.4f} vs champion v{ctx.champion.version.version} {champion:.4f} "
                           f"on {n} labelled answers ({where}; tolerance {tolerance}"
                           + (f", floor {floor}" if floor is not None else "") + ")")


def _score_on(ctx: PromotionContext, which: LocalModel, frame: pd.DataFrame, target: str, metric: str) -> float:
    rows = ctx.features(which, frame, target)
    predicted = predicted_labels(ctx.model(which).predict(ctx.as_input(which, rows)))
    return score(metric, frame[target].to_numpy(), predicted)
