"""The try-it form in a person's terms, and its answer with units and confidence.

Fields: one per input column the model takes, except engineered ones a person does not know, which are
computed from the raw value they come from: a ``<x>_sin``/``<x>_cos`` pair is one field ``x`` (hour of
day, day of the week, month), and ``weekend`` follows from the day of the week. Columns that only refine
another one (counts 2 and 3 hours earlier, ...) are optional: left empty, they take the value of the
field they refine. Every field has a readable label, a unit where one is known (a use-case file's
``columns``, else :data:`app.console.words.COLUMNS`) and a default: the typical value of the training
sample stored with the model (its median, or most common value).

Confidence: what the answer carries (``confidence``/``band`` for classifiers, ``interval``/``coverage``
for regressors) when present; else a classifier's top class probability with a band in words, and a
regressor's split-conformal interval from the version's held-out residuals (``predicted_vs_actual.csv``
of its registration views): the 90% quantile of the absolute errors on either side of the answer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from app.console import words
from civicml.answers import band, label_of_column
from civicml.errors import CivicMLError, InvalidInput

CYCLES = {"hour": 24, "dow": 7, "weekday": 7, "month": 12}
REFINES = {"lag_2": "lag_1", "lag_3": "lag_1", "lag_25": "lag_24", "lag_169": "lag_168"}
COVERAGE = 0.9


def _typical(background: pd.DataFrame | None, column: str):
    if background is None or column not in background.columns or background[column].dropna().empty:
        return None
    values = background[column].dropna()
    if values.dtype.kind in "fiu":
        return float(values.median())
    return values.astype(str).mode().iloc[0]


def _readable(column: str, declared: dict) -> tuple[str, str]:
    own = declared.get(column) or {}
    label, unit = words.COLUMNS.get(column, (column.replace("_", " ").capitalize(), ""))
    said = str(own.get("label") or label)
    return said[:1].upper() + said[1:], str(own.get("unit") if own.get("unit") is not None else unit)


def fields_for(inputs, categories: dict, background: pd.DataFrame | None, declared: dict) -> list[dict]:
    """One field per raw input (see the module's docstring), in the model's column order."""
    names = [spec.name for spec in inputs]
    cycles = {n[:-4] for n in names if n.endswith("_sin") and n[:-4] + "_cos" in names and n[:-4] in CYCLES}
    fields = []
    for spec in inputs:
        name, kind = spec.name, str(spec.type).removeprefix("DataType.")
        base = name[:-4] if name.endswith(("_sin", "_cos")) else None
        if base in cycles:
            if name.endswith("_sin"):
                fields.append(_cycle_field(base, background, declared))
            continue
        if name == "weekend" and {"dow", "weekday"} & cycles:
            continue
        label, unit = _readable(name, declared)
        field = {"name": name, "label": label, "unit": unit, "columns": [name], "optional": name in REFINES
                 or name == "mean_24", "refines": REFINES.get(name)}
        typical = _typical(background, name)
        choices = categories.get(name)
        if choices:
            options = [(str(c), words.WEEKDAYS[int(c)] if name in ("weekday", "dow") and str(c).isdigit()
                        and int(c) < 7 else str(c)) for c in choices]
            field.update(kind="choice", options=options, choices=[o[0] for o in options],
                         default=str(typical if typical is not None else options[0][0]).removesuffix(".0"))
        elif kind in ("long", "integer", "double", "float"):
            flag = _is_flag(background, name)
            if flag:
                field.update(kind="choice", options=[("0", "no"), ("1", "yes")], choices=["0", "1"],
                             default="1" if (typical or 0) >= 0.5 else "0", flag=True)
            else:
                whole = kind in ("long", "integer")
                field.update(kind="number", whole=whole, default=_round(typical, whole))
        else:
            field.update(kind="text", default="", example=str(typical or ""))
        fields.append(field)
    labels = {f["name"]: f["label"] for f in fields}
    for f in fields:
        if f.get("optional"):
            f["hint"] = f"same as '{labels[f['refines']]}'" if f.get("refines") in labels else \
                f"typical: {f.get('default', '')}"
    return fields


def _is_flag(background: pd.DataFrame | None, name: str) -> bool:
    if background is None or name not in background.columns:
        return name in ("snow", "holiday", "weekend")
    values = set(pd.to_numeric(background[name], errors="coerce").dropna().unique().tolist())
    return bool(values) and values <= {0.0, 1.0}


def _round(value, whole: bool):
    if value is None:
        return ""
    return int(round(value)) if whole else round(float(value), 1) if abs(value) < 100 else int(round(value))


def _cycle_field(base: str, background: pd.DataFrame | None, declared: dict) -> dict:
    period = CYCLES[base]
    typical = 0
    if background is not None and {f"{base}_sin", f"{base}_cos"} <= set(background.columns):
        angles = np.arctan2(background[f"{base}_sin"].astype(float), background[f"{base}_cos"].astype(float))
        values = np.round((angles % (2 * np.pi)) * period / (2 * np.pi)).astype(int) % period
        typical = int(pd.Series(values).mode().iloc[0])
    label, unit = _readable(base, declared)
    field = {"name": base, "label": label, "unit": "" if base in ("dow", "weekday") else unit, "cycle": period,
             "columns": [f"{base}_sin", f"{base}_cos"], "optional": False, "refines": None, "default": str(typical)}
    if base in ("dow", "weekday"):
        field.update(kind="choice", options=[(str(i), d) for i, d in enumerate(words.WEEKDAYS)],
                     choices=[str(i) for i in range(7)])
    elif base == "month":
        field.update(kind="choice", options=[(str(i), str(i + 1)) for i in range(12)],
                     choices=[str(i) for i in range(12)])
    else:
        field.update(kind="choice", options=[(str(i), f"{i}:00") for i in range(period)],
                     choices=[str(i) for i in range(period)])
    return field


def row_of(fields: list[dict], form: dict, column_kinds: dict[str, str]) -> tuple[dict, dict]:
    """(the model's input row, the values as the form shows them); InvalidInput says which field is wrong."""
    shown, row = {}, {}
    for f in fields:  # required first, so optional fields can copy what they refine
        value = str(form.get(f["name"], "")).strip()
        if not value and f.get("optional"):
            continue
        if not value:
            raise InvalidInput(f"please fill in '{f['label']}' ({f['name']})")
        shown[f["name"]] = value
    for f in fields:
        if f["name"] not in shown:
            source = shown.get(f.get("refines") or "") or str(f.get("default", ""))
            if source == "":
                raise InvalidInput(f"please fill in '{f['label']}' ({f['name']})")
            shown[f["name"]] = source
        value = shown[f["name"]]
        if f.get("cycle"):
            try:
                position = float(value)
            except ValueError:
                raise InvalidInput(f"'{f['label']}' must be a number") from None
            angle = 2 * math.pi * position / f["cycle"]
            row[f"{f['name']}_sin"], row[f"{f['name']}_cos"] = math.sin(angle), math.cos(angle)
            if f["name"] in ("dow", "weekday") and "weekend" in column_kinds:
                row["weekend"] = 1.0 if position >= 5 else 0.0
        elif f["kind"] == "number" or f.get("flag"):
            try:
                number = float(value)
            except ValueError:
                raise InvalidInput(f"'{f['label']}' ({f['name']}) must be a number") from None
            whole = column_kinds.get(f["name"]) in ("long", "integer")
            if whole and number != int(number):
                raise InvalidInput(f"'{f['label']}' ({f['name']}) must be a whole number")
            row[f["name"]] = int(number) if whole else number
        else:
            row[f["name"]] = value
    return row, shown


def confidence(explained: dict, output, model, frame: pd.DataFrame, interval_width: float | None) -> dict[str, Any]:
    """``confidence``/``band`` or ``interval``/``coverage`` of one answer (see the module's docstring); {} when
    nothing can be said."""
    said = explained.get("confidence")  # the answer's own (civicml.answers.row_confidence), when it has one
    record = {k: v for k, v in explained.items() if k != "confidence"}
    if isinstance(said, dict):
        record.update(said)
    elif said is not None:
        record["confidence"] = said
    if isinstance(output, pd.DataFrame) and len(output):
        record = {**output.iloc[0].to_dict(), **{k: v for k, v in record.items() if v is not None}}
    out = {k: record[k] for k in ("confidence", "band", "interval", "coverage") if record.get(k) is not None}
    if "confidence" in out or "interval" in out:
        if "confidence" in out and "band" not in out:
            out["band"] = band(float(out["confidence"]))
        return out
    probs = {label_of_column(k): float(v) for k, v in record.items() if label_of_column(k) is not None}
    if not probs:
        probs = _sklearn_probabilities(model, frame)
    if probs:
        top = max(probs.values())
        return {"confidence": top, "band": band(top), "computed": "from the model's class probabilities"}
    prediction = explained.get("prediction")
    if interval_width is not None and isinstance(prediction, (int, float)) and not isinstance(prediction, bool):
        return {"interval": [prediction - interval_width, prediction + interval_width], "coverage": COVERAGE,
                "computed": "from the errors on the version's held-out rows"}
    return {}


def _sklearn_probabilities(model, frame: pd.DataFrame) -> dict[str, float]:
    try:
        if model.metadata.flavors.get("python_function", {}).get("loader_module") != "mlflow.sklearn":
            return {}
        raw = model.get_raw_model()
        if not hasattr(raw, "predict_proba"):
            return {}
        p = raw.predict_proba(frame)[0]
        return {str(c): float(v) for c, v in zip(raw.classes_, p)}
    except Exception:  # noqa: BLE001 - an answer without confidence is still an answer
        return {}


def interval_width(csv_bytes: bytes) -> float | None:
    """Split-conformal half-width: the 90% quantile (finite-sample corrected) of |actual - predicted|."""
    import io

    try:
        frame = pd.read_csv(io.BytesIO(csv_bytes))
        err = np.sort(np.abs(frame["actual"].astype(float) - frame["predicted"].astype(float)).dropna())
    except (ValueError, KeyError, CivicMLError):
        return None
    if len(err) < 20:
        return None
    rank = min(len(err), math.ceil((len(err) + 1) * COVERAGE))
    return float(err[rank - 1])


def amount(value, unit: str = "") -> str:
    """A regression answer as a person reads it: ``223.9596`` -> "224 vehicles"."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    text = f"{value:,.0f}" if abs(value) >= 10 else f"{value:.1f}" if abs(value) >= 1 else f"{value:.2g}"
    return f"{text} {unit}".strip()


__all__ = ["amount", "band", "confidence", "fields_for", "interval_width", "row_of"]
