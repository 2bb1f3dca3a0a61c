"""The OpenAPI document of a server: what it accepts now, said for schema-based clients and fuzzers.

FastAPI builds the routes' document once; :func:`live_openapi` fills in, on each read, the served model
names and versions as path parameters and each model's input rows (from the same compiled
:class:`~serving.dataplane.Validator` that checks requests) as MLflow request bodies, with the documented
error statuses.
"""

from __future__ import annotations

from fastapi import FastAPI

from serving.dataplane import MAX_ROWS
from serving.endpoint import Endpoint
from serving.explain import MAX_ROWS as EXPLAIN_MAX_ROWS

_MLFLOW_FORMATS = {"dataframe_split": {"type": "object", "properties": {
                       "columns": {"type": "array", "items": {"type": "string"}},
                       "data": {"type": "array", "items": {"type": "array"}}}},
                   "dataframe_records": {"type": "array", "items": {"type": "object"}},
                   "instances": {"type": "array"},
                   "inputs": {}}


def _one_key(formats: dict, params: dict) -> list[dict]:
    """JSON Schema for 'exactly one of the format keys' (MLflow's rule): one variant per key, the others
    forbidden, ``params`` beside it."""
    return [{"type": "object", "required": [key], "description": f"exactly one of the keys: {key}",
             "properties": {key: schema, "params": params, **{other: False for other in formats if other != key}}}
            for key, schema in formats.items()]


MLFLOW_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"description": "exactly one of the keys "
                                                       + ", ".join(_MLFLOW_FORMATS) + " (and optional params)",
                                        "oneOf": _one_key(_MLFLOW_FORMATS, {"type": ["object", "null"]})}},
        "text/csv": {"schema": {"type": "string"}},
    },
}
V2_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["inputs"],
        "properties": {"id": {"type": "string"}, "parameters": {"type": "object"},
                       "inputs": {"type": "array", "minItems": 1, "items": {
                           "type": "object", "required": ["name", "shape", "datatype", "data"],
                           "properties": {"name": {"type": "string"},
                                          "shape": {"type": "array", "minItems": 1,
                                                    "items": {"type": "integer", "minimum": 0}},
                                          "datatype": {"type": "string", "enum": [
                                              "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                                              "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]},
                                          "data": {"type": "array"}}}},
                       "outputs": {"type": "array", "items": {"type": "object"}}}}}},
}
MLFLOW_ERR = {"content": {"application/json": {"schema": {"type": "object", "properties": {
    "error_code": {"type": "string"}, "message": {"type": "string"}}}}}}
V2_ERR = {"content": {"application/json": {"schema": {"type": "object", "properties": {
    "error": {"type": "string"}}}}}}


def error_responses(body: dict, auth: bool) -> dict:
    """The documented error statuses of the inference routes, each with the protocol's error ``body``."""
    codes = {"400": "malformed input or input outside the model's schema", "404": "unknown model or version",
             "413": "body, rows or cost (rows x text length) over the limit", "415": "unsupported content type",
             "503": "no model loaded yet, or the request's time budget passed while queued (see Retry-After)"}
    if auth:
        codes.update({"401": "no or unknown token (team mode)", "403": "token without the service role"})
    return {code: {"description": text, **body} for code, text in codes.items()}


def _params_schema(signature) -> dict:
    """``params`` as the model's signature declares them (none declared: an empty object or null)."""
    schema = getattr(signature, "params", None) if signature is not None else None
    names = [spec.name for spec in schema.params] if schema is not None else []
    return {"type": ["object", "null"], "properties": {n: {} for n in names}, "additionalProperties": False}


def _mlflow_body(row: dict | None, max_rows: int = MAX_ROWS, params: dict | None = None) -> dict:
    """The request body of ``/invocations`` for a model whose rows look like ``row`` (JSON Schema), or the
    protocol's general shape when the model has no named columns. Exactly one format key per body."""
    if row is None:
        return MLFLOW_BODY
    names = list(row["properties"])
    rows = {"type": "array", "minItems": 1, "maxItems": max_rows, "items": row}
    formats = {
        "dataframe_records": rows,
        "dataframe_split": {"type": "object", "required": ["columns", "data"], "properties": {
            "columns": {"const": names, "description": "the column names, in the order of each row's values"},
            "data": {"type": "array", "minItems": 1, "maxItems": max_rows, "items": {
                "type": "array", "prefixItems": [row["properties"][n] for n in names],
                "minItems": len(names), "maxItems": len(names)}}}},
        "instances": rows,
        "inputs": {"type": "object", "required": row["required"],
                   "description": "one list per column (one row shown; columns of equal length give more rows)",
                   "properties": {n: {"type": "array", "minItems": 1, "maxItems": 1, "items": s}
                                  for n, s in row["properties"].items()},
                   "additionalProperties": {"type": "array", "minItems": 1, "maxItems": 1}},  # ignored
    }
    variants = _one_key(formats, params or {"type": ["object", "null"]})
    return {"required": True, "content": {
        "application/json": {"schema": {"oneOf": variants}},
        "text/csv": {"schema": {"type": "string", "pattern": _csv_pattern(row),
                                "description": f"a header line naming the columns ({', '.join(names)}), then one "
                                               f"line per row (the pattern shows a simple subset)"}}}}


def _csv_pattern(row: dict) -> str:
    """A regular expression for CSV bodies of such rows: plain fields, no quoting (a subset of what is read)."""
    import re

    fields = []
    for schema in row["properties"].values():
        if "enum" in schema:
            fields.append("(" + "|".join(re.escape(str(v)) for v in schema["enum"]) + ")")
        elif schema.get("type") == "string":  # capitalised words with a space: never read as NA or a boolean
            fields.append("[A-Z][a-z]{1,12}( [a-z]{1,12}){1,4}")
        elif schema.get("type") == "integer" and schema["maximum"] - schema["minimum"] <= 100:
            fields.append("(" + "|".join(str(v) for v in range(schema["minimum"], schema["maximum"] + 1)) + ")")
        elif schema.get("type") == "integer":
            fields.append("-?[1-9][0-9]{0,8}")
        elif schema.get("type") == "boolean" or "anyOf" in schema:  # a yes/no column takes these too
            fields.append("(True|False)")
        else:
            fields.append("-?[0-9]{1,6}([.][0-9]{1,6})?")
    header = ",".join(re.escape(n) for n in row["properties"])
    return f"^{header}\n({','.join(fields)}\n){{1,20}}$"


def live_openapi(app: FastAPI, endpoints: list[Endpoint], errors: dict) -> None:
    """``/openapi.json`` says what this server accepts now: the served model names and versions, and each
    model's input rows (columns, types, categories, ranges) as request bodies, so that schema-based
    clients and fuzzers can call it. Rebuilt on each read (versions move with the alias)."""

    def openapi() -> dict:
        import copy

        doc = copy.deepcopy(FastAPI.openapi(app))  # the routes' document, built once by FastAPI
        names = [e.key for e in endpoints]
        versions = sorted({e.served.version for e in endpoints if e.served})
        bodies = _request_bodies(endpoints)
        for path, operations in doc.get("paths", {}).items():
            for method, operation in operations.items():
                _path_parameters(operation, names, versions)
                if (path, method) in bodies:
                    operation["requestBody"] = bodies[path, method]
                if path in ("/explain", "/models/{name}/explain"):
                    operation["responses"] = {**operation.get("responses", {}), **copy.deepcopy(errors)}
        return doc

    app.openapi = openapi


def _path_parameters(operation: dict, names: list[str], versions: list[str]) -> None:
    """A route's ``{name}`` and ``{version}`` as the served names and versions."""
    for parameter in operation.get("parameters", []):
        if parameter.get("in") != "path":
            continue
        if parameter["name"] == "name":
            parameter["schema"] = {"type": "string", "enum": names}
        elif parameter["name"] == "version" and versions:
            parameter["schema"] = {"type": "string", "enum": versions}


def _request_bodies(endpoints: list[Endpoint]) -> dict[tuple[str, str], dict]:
    """(path, method) -> the request body of the MLflow-format routes for the models served now. A route
    for any model says the rows only when every model has the same ones."""
    rows = [e.current.validator.json_schema() if e.current else None for e in endpoints]
    params = [_params_schema(e.current.runtime.signature if e.current else None) for e in endpoints]
    default = _mlflow_body(rows[0], params=params[0])
    same = all(r == rows[0] for r in rows) and all(p == params[0] for p in params)
    shared = default if same else MLFLOW_BODY
    return {("/invocations", "post"): default,
            ("/explain", "post"): _mlflow_body(rows[0], EXPLAIN_MAX_ROWS, params[0]),
            ("/models/{name}/invocations", "post"): shared,
            ("/models/{name}/explain", "post"): (_mlflow_body(rows[0], EXPLAIN_MAX_ROWS)
                                                 if shared is not MLFLOW_BODY else MLFLOW_BODY)}


__all__ = ["MLFLOW_BODY", "MLFLOW_ERR", "V2_BODY", "V2_ERR", "error_responses", "live_openapi"]
