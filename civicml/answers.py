"""A model's answer in one shape, for every runtime and protocol, with its confidence.

Runtimes answer with what their model gives: an :class:`Answer` or a frame with ``label`` and one
``p_<class>`` column per class (a classifier), an array of values (a regressor), anything else (passed
through by column). This module is the one place that reads those and writes the one shape
(:func:`stable_answer`):

* a classifier: ``label`` and ``probabilities`` (rows x classes, in the order of the model's ``labels``)
  and, when the model gives probabilities, ``confidence`` (the top class's probability) and ``band``
  (plain words, :data:`BANDS`). A model without probabilities gets no confidence (none is made up).
* a regressor: ``value`` and, when the model's metadata holds a split-conformal quantile ``q``
  (:func:`conformal`, computed at training from the absolute residuals on the validation rows, which
  the fit did not use), ``interval_low`` / ``interval_high`` = value -/+ q at the stated ``coverage``;
  the target's ``unit`` where the use case declares one. Values are never rounded here.

Both protocols are written from it: MLflow's response (:func:`mlflow_body`: records keep their keys
and gain ``confidence`` and ``band``; a regressor's list of values stays a list, with ``intervals``,
``coverage`` and ``unit`` beside it) and the V2 output tensors (:func:`v2_outputs`). The V2 model
metadata's outputs are the tensors of an example answer through the same functions
(:func:`v2_metadata_outputs`), so the metadata cannot say something other than what an answer is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

PREFIX = "p_"

# (lowest top-class probability, words): the first band whose floor the confidence reaches
BANDS: tuple[tuple[float, str], ...] = ((0.9, "very sure"), (0.6, "fairly sure"), (0.0, "unsure"))
DEFAULT_COVERAGE = 0.9
CONFORMAL = "conformal"  # the metadata key of a regressor's interval: {"q", "coverage", "n"}


# -- probability columns -----------------------------------------------------------------------
def probability_column(label: Any) -> str:
    """``p_<label>``: the column of one class's probability."""
    return f"{PREFIX}{label}"


def probability_columns(labels) -> list[str]:
    return [probability_column(label) for label in labels]


def label_of_column(column: Any) -> str | None:
    """The class a ``p_<label>`` column holds, else None."""
    name = str(column)
    return name[len(PREFIX):] if name.startswith(PREFIX) else None


def _column_names(output: Any) -> list | None:
    if isinstance(output, pd.DataFrame):
        return list(output.columns)
    if isinstance(output, Mapping):
        return list(output)
    return None


def read_probabilities(output: Any, labels=None) -> tuple[list[str], np.ndarray] | None:
    """(classes, rows x classes probabilities) of a frame or answer with ``p_<class>`` columns, in the
    order of ``labels`` when each has a column (else the columns' own order); None without any."""
    names = _column_names(output)
    columns = [c for c in names or [] if label_of_column(c) is not None]
    if not columns:
        return None
    if labels and all(probability_column(label) in names for label in labels):
        columns = probability_columns(labels)
    values = [np.asarray(output[c], dtype=np.float64).reshape(-1) for c in columns]
    return [label_of_column(c) for c in columns], np.column_stack(values)


def read_labels(output: Any) -> np.ndarray | None:
    """Each row's ``label`` of a frame or answer (None when it has no such column)."""
    names = _column_names(output)
    if names is None or "label" not in names:
        return None
    return np.asarray(output["label"]).reshape(-1)


# -- confidence --------------------------------------------------------------------------------
def band(confidence: float) -> str:
    """Plain words for a top-class probability (:data:`BANDS`)."""
    for floor, words in BANDS:
        if confidence >= floor:
            return words
    return BANDS[-1][1]


def confidence_of(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top-class probability, band words) per row of a rows x classes array."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    top = probabilities.max(axis=1) if probabilities.shape[0] else np.zeros(0)
    return top, np.asarray([band(float(p)) for p in top], dtype=object)


@dataclass(frozen=True)
class Conformal:
    """A split-conformal interval: value -/+ ``q`` holds the truth with probability ``coverage`` (at least,
    for new rows like the ``n`` calibration rows it was measured on)."""

    q: float
    coverage: float
    n: int

    def to_dict(self) -> dict:
        return {"q": self.q, "coverage": self.coverage, "n": self.n}

    @classmethod
    def of(cls, metadata: Mapping | None) -> Conformal | None:
        found = (metadata or {}).get(CONFORMAL)
        if not isinstance(found, Mapping) or "q" not in found:
            return None
        return cls(float(found["q"]), float(found.get("coverage", DEFAULT_COVERAGE)), int(found.get("n", 0)))


def conformal(y_true, y_pred, coverage: float = DEFAULT_COVERAGE) -> Conformal | None:
    """The conformal quantile of the absolute residuals on calibration rows the fit did not use: the
    ``ceil((n + 1) * coverage)``-th smallest. None when there are too few rows to promise ``coverage``."""
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be between 0 and 1, got {coverage}")
    truth = np.asarray(y_true, dtype=np.float64).reshape(-1)
    residuals = np.abs(truth - np.asarray(y_pred, dtype=np.float64).reshape(-1))
    residuals = np.sort(residuals[np.isfinite(residuals)])
    n = len(residuals)
    k = math.ceil((n + 1) * coverage)
    if n == 0 or k > n:
        return None
    return Conformal(float(residuals[k - 1]), float(coverage), n)


def target_unit(metadata: Mapping | None) -> str | None:
    """The target's unit as the use case declares it (``columns: {<target>: {unit: ...}}``), else None."""
    meta = metadata or {}
    declared = (meta.get("columns") or {}).get(meta.get("target")) or {}
    unit = meta.get("unit") or (declared.get("unit") if isinstance(declared, Mapping) else None)
    return str(unit) if unit else None


# -- the one shape -----------------------------------------------------------------------------
class Answer(dict):
    """A model's answer as aligned per-row columns (name -> numpy array), e.g. label and p_<class>;
    ``parameters``: what an output means (output name -> dict: the labels of ``probabilities``, the
    coverage of an interval, the unit of a value)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.parameters: dict[str, dict] = {}

    @property
    def rows(self) -> int:
        return len(next(iter(self.values()))) if self else 0

    def records(self) -> list[dict]:
        names = list(self)
        columns = [self[n].tolist() for n in names]
        return [dict(zip(names, row)) for row in zip(*columns)]


def stable_answer(output: Any, task: str | None = None, labels: list | None = None, probabilities: Any = None, *,
                  metadata: Mapping | None = None) -> Answer:
    """Any family's output -> one shape per use case: classifiers give ``label`` (+ ``probabilities`` in
    the order of ``labels``, ``confidence``, ``band``), regressors ``value`` (+ ``interval_low``,
    ``interval_high`` when ``metadata`` holds a conformal quantile); other outputs pass through by column.
    ``task`` and ``labels`` default to the model's ``metadata``."""
    meta = metadata or {}
    task = task or meta.get("task")
    labels = labels if labels is not None else meta.get("labels")
    answer = _shape(output, task, labels, probabilities)
    if "label" in answer and "probabilities" in answer and answer["probabilities"].ndim == 2 \
            and answer["probabilities"].shape[1]:
        answer["confidence"], answer["band"] = confidence_of(answer["probabilities"])
    if "value" in answer:
        _with_interval(answer, meta)
    return answer


def _shape(output: Any, task: str | None, labels: list | None, probabilities: Any) -> Answer:
    if isinstance(output, Answer) and "label" in output:  # read as it is: a frame of it cost 0.6 ms a request
        labels_out = np.empty(len(output["label"]), dtype=object)
        labels_out[:] = [str(v) for v in np.asarray(output["label"]).tolist()]
        answer = Answer(label=labels_out)
        found = read_probabilities(output, labels)
        if found is not None:
            answer["probabilities"] = found[1]
            answer.parameters["probabilities"] = {"labels": found[0]}
        return answer
    if isinstance(output, Answer):
        output = pd.DataFrame(output)
    if isinstance(output, pd.DataFrame):
        if "label" in output.columns:
            answer = Answer(label=output["label"].astype(str).to_numpy())
            found = read_probabilities(output, labels)
            if found is not None:
                answer["probabilities"] = found[1]
                answer.parameters["probabilities"] = {"labels": found[0]}
            return answer
        if output.shape[1] == 1:
            return _single(output.iloc[:, 0].to_numpy(), task, labels, probabilities)
        return Answer({str(c): output[c].to_numpy() for c in output.columns})
    if isinstance(output, pd.Series):
        output = output.to_numpy()
    if isinstance(output, dict):
        return Answer({str(k): np.asarray(v) for k, v in output.items()})
    array = np.asarray(output)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 1:
        return _single(array, task, labels, probabilities)
    return Answer(output=array)


def _single(values: np.ndarray, task: str | None, labels: list | None, probabilities: Any) -> Answer:
    if task == "classification" or values.dtype.kind in "OUS":
        answer = Answer(label=values.astype(str))
        if probabilities is not None:
            answer["probabilities"] = np.asarray(probabilities, dtype=np.float64)
            if labels:
                answer.parameters["probabilities"] = {"labels": list(labels)}
        return answer
    return Answer(value=values.astype(np.float64))


def _with_interval(answer: Answer, metadata: Mapping) -> None:
    unit = target_unit(metadata)
    said = {"unit": unit} if unit else {}
    if said:
        answer.parameters["value"] = dict(said)
    interval = Conformal.of(metadata)
    if interval is None:
        return
    answer["interval_low"] = answer["value"] - interval.q
    answer["interval_high"] = answer["value"] + interval.q
    for name in ("interval_low", "interval_high"):
        answer.parameters[name] = {"coverage": interval.coverage, **said}


def row_confidence(answer: Mapping[str, Any]) -> list[dict | None]:
    """Each row's confidence in words and numbers, for people reading one answer (the CLI, the console):
    ``{"confidence", "band"}`` for a classifier with probabilities, ``{"interval", "coverage"}`` (and
    ``unit``) for a regressor with an interval, ``{"unit"}`` alone when only the unit is known; else None."""
    parameters = getattr(answer, "parameters", {})
    rows = len(next(iter(answer.values()))) if answer else 0
    out: list[dict | None] = []
    for i in range(rows):
        said: dict[str, Any] = {}
        if "confidence" in answer:
            said = {"confidence": float(answer["confidence"][i]), "band": str(answer["band"][i])}
        elif "interval_low" in answer:
            said = {"interval": [float(answer["interval_low"][i]), float(answer["interval_high"][i])],
                    "coverage": parameters["interval_low"]["coverage"]}
        unit = (parameters.get("value") or {}).get("unit")
        if unit:
            said["unit"] = unit
        out.append(said or None)
    return out


def confidence_text(said: Mapping | None) -> str:
    """One line for a person: "very sure (93%)", "between 12.1 and 30.4 ppb (90% of the time)"."""
    if not said:
        return ""
    if "band" in said:
        return f"{said['band']} ({said['confidence']:.0%})"
    if "interval" in said:
        low, high = said["interval"]
        unit = f" {said['unit']}" if said.get("unit") else ""
        return f"between {low:.4g} and {high:.4g}{unit} ({said['coverage']:.0%} of the time)"
    return ""


# -- MLflow's scoring protocol -------------------------------------------------------------------
def json_rows(output: Any) -> Any:
    """A model's output as JSON-ready values in MLflow's response shape (a list, row by row)."""
    if isinstance(output, Answer):
        return output.records()
    if isinstance(output, pd.DataFrame):
        return output.to_dict(orient="records")
    if isinstance(output, (pd.Series, np.ndarray)):
        return output.tolist()
    if isinstance(output, dict):
        return {k: json_rows(v) for k, v in output.items()}
    return output


def mlflow_body(output: Any, metadata: Mapping | None = None) -> dict[str, Any]:
    """``{"predictions": ...}`` as MLflow answers, with confidence: each record of a classifier with
    probabilities gains ``confidence`` and ``band`` (its other keys unchanged); a regressor's values stay
    as they are, with ``intervals`` ([low, high] per row), ``coverage`` and ``unit`` beside them."""
    meta = metadata or {}
    if output.__class__ is np.ndarray and meta.get("task") != "regression":  # labels or values: as they are
        return {"predictions": output.tolist()}
    if output.__class__ is Answer:
        records = _batch_records(output, meta.get("labels"))
        if records is None:
            records = _classifier_records(output, meta.get("labels"))
        if records is not None:
            return {"predictions": records}
    found = read_probabilities(output, meta.get("labels"))
    if found is not None and found[1].shape[1] and read_labels(output) is not None \
            and isinstance(output, (Answer, pd.DataFrame)):
        confidence, words = confidence_of(found[1])
        columns = Answer({str(c): np.asarray(output[c]).reshape(-1) for c in _column_names(output)})
        columns["confidence"], columns["band"] = confidence, words
        return {"predictions": columns.records()}
    body: dict[str, Any] = {"predictions": json_rows(output)}
    if meta.get("task") == "regression":
        answer = stable_answer(output, metadata=meta)
        if "interval_low" in answer:
            body["intervals"] = np.column_stack([answer["interval_low"], answer["interval_high"]]).tolist()
            body["coverage"] = answer.parameters["interval_low"]["coverage"]
        if target_unit(meta):
            body["unit"] = target_unit(meta)
    return body


def _classifier_records(output: Answer, labels) -> list[dict] | None:
    """:func:`mlflow_body`'s records of a classifier's :class:`Answer` (``label`` and float ``p_<class>``
    columns, 1-d) with plain Python values, row by row: the same records as its numpy way, without a
    rows x classes array and an :class:`Answer` per request. None for anything else (and for a missing
    probability, where Python's ``max`` and numpy's differ), which takes the numpy way."""
    names = tuple(output)
    plan = _RECORD_PLANS.get((names, id(labels)))
    if plan is None or plan[0] is not labels:
        plan = _records_plan(names, labels)
    keys, probability = plan[1]
    if keys is None:
        return None
    columns = list(output.values())
    for c in columns:
        if c.__class__ is not np.ndarray or c.ndim != 1:
            return None
    for k in probability:
        if columns[k].dtype.kind != "f":
            return None
    records = []
    for row in zip(*[c.tolist() for c in columns]):
        top = max([row[k] for k in probability])
        if top != top or any(row[k] != row[k] for k in probability):
            return None
        records.append(dict(zip(keys, (*row, top, band(top)))))
    return records


def _batch_records(output: Answer, labels) -> list[dict] | None:
    """The records of a request's rows ``start:stop`` of the batch it was answered in (``part_of``, set by
    serving.batching's split: ``(batch answer, start, stop)``), made once for the whole batch: the same
    records as its own rows' (:func:`_classifier_records` reads each row alone), without their per-request
    cost. None when it has no batch, or the batch has records only the numpy way."""
    part = output.__dict__.get("part_of")
    if part is None:
        return None
    batch, start, stop = part
    made = batch.__dict__.get("_records")
    if made is None or made[0] is not labels:
        made = batch.__dict__["_records"] = (labels, _classifier_records(batch, labels))
    return None if made[1] is None else made[1][start:stop]


_RECORD_PLANS: dict = {}  # (column names, id(labels)) -> (labels, (record keys, probability positions))


def _records_plan(names: tuple, labels) -> tuple:
    """What :func:`_classifier_records` reads in an answer of these columns, worked out once per shape and
    labels (the same for every request a version answers: its metadata's list): (labels, (the records' keys,
    where the probabilities are)), or (labels, (None, None)) for an answer it leaves to the numpy way."""
    found = (None, None)
    if "label" in names:
        probability = [k for k, name in enumerate(names) if label_of_column(name) is not None]
        if labels and all(probability_column(label) in names for label in labels):
            wanted = set(probability_columns(labels))
            probability = [k for k in probability if names[k] in wanted]
        if probability:
            found = ([str(name) for name in names] + ["confidence", "band"], probability)
    if len(_RECORD_PLANS) >= 256:
        _RECORD_PLANS.clear()
    plan = _RECORD_PLANS[(names, id(labels))] = (labels, found)  # labels kept: its id is not reused meanwhile
    return plan


# -- Open Inference Protocol V2 ------------------------------------------------------------------
def v2_tensor(name: str, values: Any, parameters: Mapping | None = None) -> dict:
    """One V2 output tensor: BYTES for text, BOOL, INT64 for whole numbers, FP64 for the rest."""
    array = np.asarray(values)
    if array.dtype.kind in "OUS":
        datatype, data = "BYTES", [str(v) for v in array.reshape(-1).tolist()]
    elif array.dtype.kind == "b":
        datatype, data = "BOOL", array.reshape(-1).tolist()
    elif array.dtype.kind in "iu":
        datatype, data = "INT64", array.astype(np.int64).reshape(-1).tolist()
    else:
        datatype, data = "FP64", array.astype(np.float64).reshape(-1).tolist()
    tensor = {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}
    if parameters:
        tensor["parameters"] = dict(parameters)
    return tensor


def v2_outputs(answer: Mapping[str, Any], wanted=None) -> list[dict]:
    """An answer's V2 output tensors (only the ``wanted`` names, when given)."""
    wanted = set(wanted or [])
    parameters = getattr(answer, "parameters", {})
    return [v2_tensor(name, values, parameters.get(name)) for name, values in answer.items()
            if not wanted or name in wanted]


def v2_metadata_outputs(metadata: Mapping | None) -> list[dict]:
    """The V2 model metadata's ``outputs``: the tensors of an example answer of this model (one row, made
    by :func:`stable_answer` and :func:`v2_outputs` as every answer is), without data, any rows."""
    meta = metadata or {}
    labels = [str(label) for label in meta.get("labels") or []]
    if meta.get("task") == "classification":
        example: Any = Answer(label=np.asarray(labels[:1] or [""], dtype=object),
                              **{probability_column(label): np.full(1, 1 / len(labels)) for label in labels})
    elif meta.get("task") == "regression":
        example = np.zeros(1)
    else:
        return []
    tensors = v2_outputs(stable_answer(example, metadata=meta))
    for tensor in tensors:
        del tensor["data"]
        tensor["shape"] = [-1, *tensor["shape"][1:]]
    return tensors


__all__ = ["Answer", "BANDS", "CONFORMAL", "Conformal", "DEFAULT_COVERAGE", "PREFIX", "band", "confidence_of",
           "confidence_text", "conformal", "json_rows", "label_of_column", "mlflow_body", "probability_column",
           "probability_columns", "read_labels", "read_probabilities", "row_confidence", "stable_answer",
           "target_unit", "v2_metadata_outputs", "v2_outputs", "v2_tensor"]
