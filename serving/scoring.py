"""Batch scoring: a registered version run over files on Spark, with the runtimes and answer shape of HTTP.

    from serving.scoring import score, ScoreOptions
    result = score("service-requests-router", "champion", ["tickets.csv"], "scored.parquet")

The job reads CSV or Parquet, checks every row as the HTTP data plane does, answers with the same runtime a
replica would load (a variant such as ``int8`` too), and writes Parquet: each row's own columns, then
``answer``, ``confidence`` (classifiers), ``interval_low``/``interval_high`` (regressors with a stated
interval), the ``version`` and ``variant`` that answered and, with ``explain``, the top ``reasons``, in the
input's row order. A row the checks refuse goes to the rejects file with its ``reason``; the job never dies
on one row. Everything is written beside the output first and renamed into place at the end, so a failed
job leaves nothing behind. The job is an MLflow run (lineage: version, input fingerprint, row counts) and
an audited event on the model.

Spark starts by itself on ``local[*]``; a team passes any master URL. Inputs on ``s3://`` are staged through
boto3 with the artifact store's credentials when Spark runs locally (Spark's own S3 connector needs the
hadoop-aws jars on the cluster, which a team's cluster has: there ``s3a://`` paths are handed to Spark).
"""

from __future__ import annotations

import hashlib
import re
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from civicml.answers import Conformal, stable_answer
from civicml.errors import CivicMLError, InvalidInput
from civicml.lazy import optional
from civicml.settings import Settings
from civicml.tags import TAG_RUNTIME

ROW = "__civicml_row"
REASON = "reason"
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
MAX_REASONS = 3
SPLIT_ROWS = 64  # a batch the checks refuse is checked again in chunks of this many rows
LOG_CONFIG = Path(__file__).with_name("spark-log4j2.properties")  # Spark's own lines: errors only


@dataclass(frozen=True)
class ScoreOptions:
    """How a job runs: the variant to answer with, where Spark runs, whether to explain each row, where the
    rejected rows go (default: beside the output, ``<output>.rejects.parquet``), rows per model call."""

    variant: str | None = None
    spark_master: str = "local[*]"
    explain: bool = False
    rejects: str | None = None
    batch_rows: int = 5000


@dataclass
class ScoreResult:
    model: str
    version: str
    variant: str | None
    rows_in: int
    rows_scored: int
    rows_rejected: int
    output: str
    rejects: str | None
    input_fingerprint: str
    run_id: str | None = None
    seconds: float = 0.0
    columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- what runs on each executor ---------------------------------------------------------------------------
@dataclass
class _Scorer:
    """Picklable: shipped to the executors, where it loads the runtime once per Python worker. A model that
    takes a tensor (an image CNN) reads each row's array from ``tensor_column``."""

    local: Any  # registry.LocalModel (path, version, metadata)
    runtime_name: str
    variant: str | None
    explain: bool
    batch_rows: int
    answer_fields: list[str]
    tensor_column: str | None = None

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        loaded = _loaded(self)
        for batch in batches:
            for start in range(0, len(batch), self.batch_rows):
                yield self.score(loaded, batch.iloc[start:start + self.batch_rows].reset_index(drop=True))

    def score(self, loaded, batch: pd.DataFrame) -> pd.DataFrame:
        runtime, validator, explainer = loaded
        inputs = batch.drop(columns=[ROW])
        payload, unreadable = self._payload(validator, inputs)
        request = None
        if not unreadable:
            try:  # the common case: every row passes the checks, checked once as one batch
                request = validator.prepare(payload)
            except CivicMLError:
                pass
        if request is not None:
            out = pd.DataFrame(_answers(runtime, request, len(inputs)))
            if self.explain and explainer is not None:
                out["reasons"] = _reasons(explainer, inputs)
            out = out.reindex(columns=self.answer_fields)
            out[REASON] = None
        else:
            out = self._some_refused(runtime, validator, explainer, inputs, (payload, unreadable))
        out["version"] = self.local.version.version
        out["variant"] = self.variant
        return pd.concat([batch, out], axis=1)

    def _payload(self, validator, inputs: pd.DataFrame) -> tuple[Any, dict[int, str]]:
        """What the checks take: the frame itself, or (a tensor model) the rows' arrays stacked, with the
        reason of each row whose value is not an array of the model's shape."""
        if self.tensor_column is None:
            return inputs, {}
        spec = validator.tensor_spec
        return _tensor(inputs[self.tensor_column], tuple(spec.shape[1:]), spec.type)

    def _some_refused(self, runtime, validator, explainer, inputs: pd.DataFrame, payload) -> pd.DataFrame:
        """The answer columns of a batch holding refused rows: answers where the checks pass, reasons elsewhere."""
        data, unreadable = payload
        if self.tensor_column is None:
            def prepare(rows):
                return validator.prepare(data.iloc[rows].reset_index(drop=True))
        else:
            def prepare(rows):
                return validator.prepare(data[rows])
        good, reasons = _split_rows(prepare, len(inputs), unreadable)
        out = pd.DataFrame({name: pd.Series([None] * len(inputs), dtype=object) for name in self.answer_fields})
        out[REASON] = pd.Series(reasons, dtype=object)
        if good:
            for name, values in _answers(runtime, prepare(good), len(good)).items():
                out.loc[good, name] = pd.Series(list(values), index=good, dtype=object)
            if self.explain and explainer is not None:
                frame = inputs.iloc[good].reset_index(drop=True)
                out.loc[good, "reasons"] = pd.Series(_reasons(explainer, frame), index=good, dtype=object)
        return out


_LOADED: dict[str, tuple] = {}


def _loaded(scorer: _Scorer):
    """The runtime, its checks and (with ``explain``) the explainer, once per worker process."""
    key = f"{scorer.local.path}|{scorer.runtime_name}|{scorer.explain}"
    if key not in _LOADED:
        from serving.dataplane import Validator
        from serving.runtime import get_runtime

        runtime = get_runtime(scorer.runtime_name, scorer.local)
        runtime.load()
        explainer = None
        if scorer.explain:
            from serving.explain import ModelExplainer

            explainer = ModelExplainer(scorer.local)
        _LOADED[key] = (runtime, Validator(runtime.signature, runtime.metadata), explainer)
    return _LOADED[key]


def _tensor(column: pd.Series, shape: tuple, dtype) -> tuple[np.ndarray, dict[int, str]]:
    """A column of arrays (nested lists as Parquet stores ``[3, 32, 32]``, or each row's numbers flat) as
    one array ``[rows, *shape]``; rows that are not ``shape`` numbers are zeros here and have a reason."""
    size = int(np.prod(shape))
    out = np.zeros((len(column), *shape), dtype=dtype)
    unreadable: dict[int, str] = {}
    for i, value in enumerate(column.to_numpy()):
        try:
            array = _dense(value).astype(dtype, copy=False)
        except (TypeError, ValueError):
            array = None
        if array is None or array.size != size:
            got = "no value" if value is None else f"{'no' if array is None else array.size} numbers"
            unreadable[i] = f"column '{column.name}': the model takes {size} numbers {list(shape)} a row, got {got}"
        else:
            out[i] = array.reshape(shape)
    return out, unreadable


def _dense(value) -> np.ndarray:
    """A row's value as one numeric array (Arrow gives nested lists as object arrays of arrays)."""
    if value is None:
        raise ValueError("no value")
    array = np.asarray(value)
    if array.dtype == object:
        array = np.stack([_dense(v) for v in array]) if len(array) else np.zeros(0)
    return array


def _split_rows(prepare, rows: int, unreadable: dict[int, str]) -> tuple[list[int], list[str | None]]:
    """Rows the checks accept, and each refused row's reason: chunks of ``SPLIT_ROWS``, a refused chunk in
    halves down to rows (a batch of 5,000 with a few bad rows: about 80 small checks, not 5,000).
    ``prepare(positions)`` checks those rows; ``unreadable`` rows are refused before with their reason."""
    reasons: list[str | None] = [unreadable.get(i) for i in range(rows)]
    good: list[int] = []

    def check(positions: list[int]) -> None:
        try:
            prepare(positions)
            good.extend(positions)
        except CivicMLError as err:
            if len(positions) == 1:  # the row's own columns say which it is: "row 0" of a one-row check would not
                reasons[positions[0]] = re.sub(r" in row 0\b", "", str(err))[:500]
                return
            middle = len(positions) // 2
            check(positions[:middle])
            check(positions[middle:])

    candidates = [i for i in range(rows) if i not in unreadable]
    for start in range(0, len(candidates), SPLIT_ROWS):  # a few bad rows cost their chunks, not the batch
        check(candidates[start:start + SPLIT_ROWS])
    return sorted(good), reasons


def _answers(runtime, request, rows: int) -> dict[str, list]:
    """The answer columns for a checked request of ``rows`` rows, in the one shape HTTP answers with
    (:func:`civicml.answers.stable_answer`): label and confidence, or value and its interval."""
    answer = stable_answer(runtime.predict(request.data), metadata=runtime.metadata or {})
    if "label" in answer:
        out = {"answer": [str(v) for v in answer["label"]]}
        if "confidence" in answer:
            out["confidence"] = [float(v) for v in answer["confidence"]]
        return out
    values = answer["value"] if "value" in answer else np.asarray(next(iter(answer.values())), dtype=np.float64)
    out = {"answer": [float(v) for v in np.asarray(values).reshape(rows, -1)[:, 0]]}
    for name in ("interval_low", "interval_high"):
        if name in answer:
            out[name] = [float(v) for v in answer[name]]
    return out


def _reasons(explainer, frame: pd.DataFrame) -> list[str]:
    from serving.explain import MAX_ROWS

    out = []
    for start in range(0, len(frame), MAX_ROWS):
        for row in explainer.explain(frame.iloc[start:start + MAX_ROWS].reset_index(drop=True)):
            out.append(json.dumps([{"feature": f, "weight": round(float(w), 4)}
                                   for f, w in row.contributions[:MAX_REASONS]]))
    return out


# -- the driver --------------------------------------------------------------------------------------------
def score(name: str, ref: str, inputs: list[str], output: str, options: ScoreOptions | None = None, *,
          settings: Settings | None = None, progress: Callable[[str], None] | None = None) -> ScoreResult:
    """Score ``inputs`` (CSV or Parquet files) with version or alias ``ref`` of ``name`` into Parquet at
    ``output``; see the module's text. Bad arguments raise :class:`InvalidInput` before Spark starts."""
    options = options or ScoreOptions()
    settings = settings or Settings.from_env()
    say = progress or (lambda text: None)
    started = time.perf_counter()
    files, kind = _check_inputs(inputs)
    out_path, rejects_path = _check_outputs(output, options.rejects)
    local, runtime_name, variant = _resolve(name, ref, options.variant, settings)
    fingerprint = input_fingerprint(files, settings)
    say(f"scoring with {name} version {local.version.version}{f' ({variant})' if variant else ''}: "
        f"{len(files)} file(s), fingerprint {fingerprint[:12]}")
    staging = out_path.parent / f".{out_path.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        with _spark(options.spark_master, settings.home / "logs" / "spark.log") as spark:
            counts, columns = _run(spark, _SparkJob(local, runtime_name, variant, files, kind, options), staging,
                                   say)
        _publish(staging, out_path, rejects_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = ScoreResult(name, local.version.version, variant, counts["in"], counts["scored"], counts["rejected"],
                         str(out_path), str(rejects_path) if counts["rejected"] else None, fingerprint,
                         seconds=round(time.perf_counter() - started, 3), columns=columns)
    from registry import record_scoring

    result.run_id = record_scoring(result.to_dict(), files, settings=settings)
    say(f"{result.rows_scored} row(s) scored, {result.rows_rejected} rejected, in {result.seconds:.1f} s")
    return result


def _check_inputs(inputs: list[str]) -> tuple[list[str], str]:
    if not inputs:
        raise InvalidInput("no input files: pass --input PATH (CSV or Parquet)")
    kinds, files = set(), []
    for raw in inputs:
        path = str(raw)
        suffix = Path(path.rstrip("/")).suffix.lower()
        if suffix not in FORMATS:
            raise InvalidInput(f"input '{path}': not a .csv or .parquet file")
        if not path.startswith(("s3://", "s3a://")) and not Path(path).exists():
            raise InvalidInput(f"input '{path}' not found")
        kinds.add(FORMATS[suffix])
        files.append(path)
    if len(kinds) > 1:
        raise InvalidInput("inputs mix CSV and Parquet: score them in separate jobs")
    return files, kinds.pop()


def _check_outputs(output: str, rejects: str | None) -> tuple[Path, Path]:
    out = Path(output)
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise InvalidInput(f"output '{output}': name a .parquet path")
    rejected = Path(rejects) if rejects else out.with_name(out.stem + ".rejects.parquet")
    for path in (out, rejected):
        if path.exists():
            raise InvalidInput(f"output '{path}' exists: remove it or name another (nothing is overwritten)")
        if not path.parent.is_dir():
            raise InvalidInput(f"output folder '{path.parent}' does not exist")
    return out, rejected


def _resolve(name: str, ref: str, variant: str | None, settings: Settings):
    """The checksum-verified local copy that answers, the runtime a replica would use for it, its variant."""
    from registry import find_variant, resolve

    local = resolve(name, ref, settings=settings)  # checks the caller may predict, verifies the checksum
    if variant:
        chosen = find_variant(name, local.version.version, variant, settings=settings)
        local = resolve(name, chosen.version, settings=settings)
        return local, (chosen.tags or {}).get(TAG_RUNTIME) or "pyfunc", variant
    return local, "pyfunc", None


@dataclass(frozen=True)
class _SparkJob:
    local: Any
    runtime_name: str
    variant: str | None
    files: list[str]
    kind: str
    options: ScoreOptions


class _spark:
    """A Spark session for one job: ``local[*]`` started here (its Python workers run this interpreter), or a
    team's master by URL; stopped afterwards. What the JVM prints goes to ``log`` (the home's
    ``logs/spark.log``), not to the user's terminal."""

    def __init__(self, master: str, log: Path):
        self.master = master or "local[*]"
        self.log = log

    def __enter__(self):
        sql = optional("pyspark.sql", "spark")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the workers need this venv's libraries
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        builder = (sql.SparkSession.builder.master(self.master).appName("civicml-score")
                   .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                   .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                   .config("spark.sql.session.timeZone", "UTC")
                   .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={LOG_CONFIG}")
                   .config("spark.executor.extraJavaOptions", f"-Dlog4j2.configurationFile={LOG_CONFIG}"))
        self.log.parent.mkdir(parents=True, exist_ok=True)
        saved = os.dup(2)
        try:
            with open(self.log, "ab") as log:
                os.dup2(log.fileno(), 2)  # the JVM inherits this as its stderr
                self.session = builder.getOrCreate()
        except Exception as err:  # no Java, an unreachable master
            raise InvalidInput(f"Spark did not start on {self.master}: {' '.join(str(err).split())[:300]} "
                               f"(see {self.log})") from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        self.session.sparkContext.setLogLevel("ERROR")
        return self.session

    def __exit__(self, *exc):
        self.session.stop()
        return False


def _read(spark, job: _SparkJob, staging: Path):
    files = [_staged(f, staging) if f.startswith("s3://") and job.options.spark_master.startswith("local")
             else f.replace("s3://", "s3a://", 1) for f in job.files]
    # one frame per file, in the order given: Spark orders one file's splits by offset, and a union keeps
    # its children's order, so the row ids below follow the input's row order
    if job.kind == "csv":
        # every value as text: the checks turn it into the signature's types, as for a CSV request over HTTP
        frames = [spark.read.option("header", True).option("inferSchema", False).csv(f) for f in files]
    else:
        frames = [spark.read.parquet(f) for f in files]
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.unionByName(other, allowMissingColumns=True)
    return frame


def _staged(url: str, staging: Path) -> str:
    """An ``s3://`` input copied into the job's staging folder through boto3 (the artifact store's
    credentials and endpoint): a local Spark has no S3 connector of its own."""
    bucket, _, key = url[len("s3://"):].partition("/")
    target = staging / "inputs" / f"{uuid.uuid4().hex[:8]}-{Path(key).name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _s3().download_file(bucket, key, str(target))
    except Exception as err:  # noqa: BLE001 - a missing object, no credentials: one line
        raise InvalidInput(f"input '{url}' could not be read: {' '.join(str(err).split())[:200]}") from None
    return str(target)


def _run(spark, job: _SparkJob, staging: Path, say) -> tuple[dict[str, int], list[str]]:
    """Score into ``staging/scored`` and ``staging/rejected`` (Parquet, in the input's row order)."""
    functions = optional("pyspark.sql.functions", "spark")
    frame = _read(spark, job, staging)
    if not frame.columns:
        raise InvalidInput("the inputs have no columns")
    if ROW in frame.columns or REASON in frame.columns:
        raise InvalidInput(f"the inputs have a column named '{ROW}' or '{REASON}': rename it")
    frame = _spread(spark, frame.withColumn(ROW, functions.monotonically_increasing_id()))
    fields, types = _answer_schema(job)
    scorer = _Scorer(job.local, job.runtime_name, job.variant, job.options.explain, job.options.batch_rows,
                     fields, _tensor_column(job, frame))
    struct = optional("pyspark.sql.types", "spark")
    schema = struct.StructType(list(frame.schema.fields) + [struct.StructField(name, kind, True)
                                                             for name, kind in types.items()])
    say("Spark is scoring")
    scored = frame.mapInPandas(scorer, schema=schema).persist()  # scored once, then split in two
    try:
        # no sort: each partition keeps the input's order, and its part file's number is the partition's
        accepted = scored.filter(functions.col(REASON).isNull()).drop(ROW, REASON)
        accepted.write.parquet(str(staging / "scored"))
        total, refused = scored.select(functions.count("*"), functions.count(REASON)).first()  # one pass
        counts = {"in": int(total), "rejected": int(refused)}
        rejected = scored.filter(functions.col(REASON).isNotNull()).select(
            *[c for c in frame.columns if c != ROW], REASON)
        if counts["rejected"]:
            rejected.coalesce(1).write.parquet(str(staging / "rejected"))
    finally:
        scored.unpersist()
    counts["scored"] = counts["in"] - counts["rejected"]
    return counts, accepted.columns


def _tensor_column(job: _SparkJob, frame) -> str | None:
    """For a model that takes a tensor (images): the input column holding each row's array (the column the
    signature names, else the inputs' one column of arrays); None for a model of named columns."""
    from mlflow.models import Model

    signature = Model.load(str(job.local.path)).signature
    if signature is None or signature.inputs is None or not signature.inputs.is_tensor_spec():
        return None
    spec = signature.inputs.inputs[0]
    shape = [int(s) for s in spec.shape[1:]]
    if job.options.explain:
        raise InvalidInput("--explain needs a model of named columns; this one takes an array of shape "
                           f"{shape} a row")
    if spec.name and spec.name in frame.columns:
        return spec.name
    types = optional("pyspark.sql.types", "spark")
    arrays = [f.name for f in frame.schema.fields if isinstance(f.dataType, types.ArrayType)]
    if len(arrays) != 1:
        found = f"found {len(arrays)}: {', '.join(arrays)}" if arrays else "found none (CSV holds no arrays)"
        raise InvalidInput(f"this model takes an array of shape {shape} a row: the input needs exactly one column "
                           f"of arrays, nested or flat, in Parquet ({found})")
    return arrays[0]


def _answer_schema(job: _SparkJob) -> tuple[list[str], dict]:
    """The columns the answers add, typed: learnt from the model's metadata without loading it here."""
    types = optional("pyspark.sql.types", "spark")
    meta = job.local.metadata or {}
    classifier = (meta.get("task") == "classification") or bool(meta.get("labels"))
    out = {"answer": types.StringType() if classifier else types.DoubleType()}
    if classifier:
        out["confidence"] = types.DoubleType()
    elif Conformal.of(meta) is not None:
        out["interval_low"] = types.DoubleType()
        out["interval_high"] = types.DoubleType()
    if job.options.explain:
        out["reasons"] = types.StringType()
    fields = list(out)
    out.update({"version": types.StringType(), "variant": types.StringType(), REASON: types.StringType()})
    return fields, out


def _spread(spark, frame):
    """An input Spark reads as fewer partitions than it has cores (one Parquet file of one row group, one
    CSV file) cut into that many contiguous ranges of rows, each kept in the input's order, so that every
    core scores a part and the part files still follow the input's rows."""
    cores = spark.sparkContext.defaultParallelism
    if frame.rdd.getNumPartitions() >= cores:
        return frame
    return frame.repartitionByRange(cores, ROW).sortWithinPartitions(ROW)


def _publish(staging: Path, output: Path, rejects: Path) -> None:
    """Rename the finished folders into place: the output appears whole or not at all."""
    os.replace(staging / "scored", output)
    if (staging / "rejected").exists():
        os.replace(staging / "rejected", rejects)


def input_fingerprint(files: list[str], settings: Settings | None = None) -> str:
    """sha256 over the inputs' bytes (local files) or their ETags (S3), in the order given: which records a
    model version decided is said by this and the run's lineage."""
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode())
        if name.startswith(("s3://", "s3a://")):
            digest.update(_etag(name).encode())
            continue
        paths = sorted(Path(name).rglob("*")) if Path(name).is_dir() else [Path(name)]
        for path in (p for p in paths if p.is_file()):
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _s3():
    """An S3 client with the artifact store's credentials and endpoint (``AWS_*``, ``MLFLOW_S3_ENDPOINT_URL``)."""
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)


def _etag(url: str) -> str:
    bucket, _, key = url.split("://", 1)[1].partition("/")
    try:
        return _s3().head_object(Bucket=bucket, Key=key)["ETag"]
    except Exception as err:  # noqa: BLE001
        raise InvalidInput(f"input '{url}' could not be read: {' '.join(str(err).split())[:200]}") from None


__all__ = ["ScoreOptions", "ScoreResult", "input_fingerprint", "score"]
