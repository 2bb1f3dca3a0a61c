"""Plain words for the console: what the registry's technical names mean to someone who is not a data
scientist. The technical name always stays reachable (a tooltip or a small note beside the words).

Presentation only: no rule of the registry lives here (which gates exist, what a metric is, who may act).
"""

from __future__ import annotations

import re
from typing import Any

FAMILIES = {
    "logreg": "word-weight model (logistic regression)",
    "linear": "weighted sum of the inputs (linear model)",
    "svm": "word-weight model (support vector machine)",
    "decision_tree": "decision tree",
    "random_forest": "many decision trees voting (random forest)",
    "boosting": "boosted decision trees",
    "hist_gradient_boosting": "boosted decision trees",
    "minilm_linear": "pretrained sentence model with a simple classifier on top (MiniLM)",
    "minilm_zero_shot": "pretrained sentence model, no training on city data (MiniLM zero-shot)",
    "minilm_finetune": "pretrained sentence model, retrained on city requests (MiniLM fine-tuned)",
    "mlp": "small neural network",
    "paddle_mlp": "small neural network",
    "cnn": "picture recognition network (CNN)",
}

METRICS = {
    "accuracy": "share of answers that were right",
    "macro_f1": "balance across all answers, rare ones counting as much as common ones (macro F1)",
    "mae": "average miss (mean absolute error)",
    "rmse": "typical miss, large misses weighing more (RMSE)",
}

SHORT = {"accuracy": "the share of right answers", "macro_f1": "balance across all answers (macro F1)",
         "mae": "average miss", "rmse": "typical miss"}

# known columns of the built-in use cases; a use-case file declares its own (``columns: {x: {label, unit}}``)
COLUMNS = {
    "lag_1": ("Vehicles in the last hour", "vehicles"),
    "lag_2": ("Vehicles 2 hours earlier", "vehicles"),
    "lag_3": ("Vehicles 3 hours earlier", "vehicles"),
    "lag_24": ("Vehicles at this hour yesterday", "vehicles"),
    "lag_25": ("Vehicles an hour before that, yesterday", "vehicles"),
    "lag_168": ("Vehicles at this hour a week earlier", "vehicles"),
    "lag_169": ("Vehicles an hour before that, a week earlier", "vehicles"),
    "mean_24": ("Average vehicles per hour over the last 24 hours", "vehicles"),
    "temp_c": ("Temperature", "°C"),
    "precip_mm": ("Rain or snow", "mm per hour"),
    "snow": ("Snowing", ""),
    "holiday": ("Public holiday", ""),
    "weekend": ("Weekend", ""),
    "hour": ("Hour of day", "0-23"),
    "weekday": ("Day of the week", ""),
    "dow": ("Day of the week", ""),
    "vehicle_count": ("Vehicles in the next hour", "vehicles"),
}
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def feature(text: str, declared: dict | None = None) -> str:
    """An explanation's ``column = value`` in readable words: ``lag_1 = 186`` -> "Vehicles in the last hour = 186"."""
    name, sep, value = str(text).partition(" = ")
    own = (declared or {}).get(name) or {}
    label = own.get("label") or COLUMNS.get(name, (None, ""))[0]
    if not sep or not label:
        return str(text)
    unit = own.get("unit") if own.get("unit") is not None else COLUMNS.get(name, ("", ""))[1]
    return f"{label} = {value}" + (f" {unit}" if unit and unit not in ("0-23",) else "")


def family(name: str | None) -> str:
    return FAMILIES.get(str(name), str(name or "-").replace("_", " "))


def metric(name: str) -> str:
    return METRICS.get(name, name.replace("_", " "))


def times_in_100(value: float) -> str:
    return f"right {round(100 * value)} times in 100"


def quality(name: str, value: float | None, unit: str = "") -> str:
    """``accuracy 0.97`` -> "right 97 times in 100"; ``mae 38.2`` -> "off by 38 vehicles on average"."""
    if value is None:
        return "-"
    if name == "accuracy":
        return times_in_100(value)
    if name in ("mae", "rmse"):
        amount = f"{value:,.0f}" if abs(value) >= 10 else f"{value:.2g}"
        return f"off by {amount}{' ' + unit if unit else ''} {'on average' if name == 'mae' else 'typically'}"
    return f"{metric(name)}: {value:.2f} out of 1"


def gate(title: str) -> str:
    """A gate's audited title in words (the title itself stays beside it)."""
    t = str(title)
    found = re.match(r"(\w+) (>=|<=) ([\d.]+)$", t)
    if t == "signature compatible":
        return "takes the same inputs as the live version, so the services that call it keep working"
    if t == "holdout data set":
        return "was checked on the exact held-out set the policy names"
    if t.startswith("latency p95"):
        return f"answers fast enough: 95 in 100 answers within {t.rsplit('<=', 1)[-1].strip()}"
    if t.startswith("approvals"):
        return f"has enough approvals ({t.rsplit('>=', 1)[-1].strip()} needed)"
    if t.endswith("vs baseline"):
        return "does clearly better than a trivial guess"
    if t.endswith("vs champion"):
        return "is at least as good as the live version"
    if "unseen phrasings" in t:
        return f"copes with wording it never saw ({t.split(' on ')[0].replace('_', ' ')} {t.split(' ')[-2]} " \
               f"{t.split(' ')[-1]})"
    if found:
        return f"scores {'at least' if found[2] == '>=' else 'at most'} {found[3]} on {SHORT.get(found[1], found[1])}"
    return t.replace("_", " ")


def audit_row(r: dict[str, Any]) -> str:
    """One audit record as a sentence: what changed, to which version."""
    action, alias = r.get("action"), r.get("alias")
    to, old = r.get("to"), r.get("from")
    if action == "register":
        return f"registered version {r.get('version', '?')}" + (f" as {alias}" if alias else "")
    if action == "promote":
        passed = sum(1 for g in r.get("gates", []) if g.get("passed"))
        return (f"made version {to} the {alias or 'champion'}" + (f" (was version {old})" if old else "")
                + f"; {passed} of {len(r.get('gates', []))} checks passed")
    if action == "refuse":
        failed = [g.get("gate", "?") for g in r.get("gates", []) if not g.get("passed")]
        return f"refused to make version {to} the {alias or 'champion'}; failed: {', '.join(failed) or '?'}"
    if action == "rollback":
        return f"rolled {alias or 'champion'} back from version {old} to version {to}"
    if action == "alias":
        return f"pointed {alias} at version {to}" + (f" (was version {old})" if old else "")
    if action == "approve":
        return f"approved version {r.get('version', '?')}"
    if action == "denied":
        return f"was refused: {r.get('attempted', 'an action')} (role {', '.join(r.get('roles') or []) or 'none'})"
    if alias:
        return f"{action} {alias}" + (f": version {old} → {to}" if old else f": version {to}" if to else "")
    if r.get("version"):
        return f"{action} version {r['version']}"
    return str(action)


__all__ = ["COLUMNS", "FAMILIES", "METRICS", "SHORT", "WEEKDAYS", "audit_row", "family", "feature", "gate", "metric",
           "quality", "times_in_100"]
