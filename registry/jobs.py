"""What a batch scoring job leaves in the stores: an MLflow run with its lineage, and an audited event on the
model, so that a public body can say which model version decided which record."""

from __future__ import annotations

from typing import Any

from mlflow.entities import Metric, Param

from civicml.access import caller
from civicml.settings import Settings
from civicml.tags import (TAG_SCORED_INPUT_FINGERPRINT, TAG_SCORED_MODEL, TAG_SCORED_VARIANT,
                          TAG_SCORED_VERSION)
from civicml.tracking import experiment_id, tracking_client
from registry.events import AuditEvent
from registry.guard import audit_record
from registry.store import ModelStore

EXPERIMENT = "civicml-scoring"


def record_scoring(job: dict[str, Any], files: list[str], settings: Settings | None = None) -> str:
    """Log a finished job (``serving.scoring.ScoreResult.to_dict()``) as an MLflow run in the
    ``civicml-scoring`` experiment and audit it on the model; the run's id."""
    settings = settings or Settings.from_env()
    client = tracking_client(settings)
    run = client.create_run(experiment_id(settings, EXPERIMENT), run_name=f"score {job['model']} v{job['version']}",
                            tags={TAG_SCORED_MODEL: job["model"], TAG_SCORED_VERSION: str(job["version"]),
                                  TAG_SCORED_VARIANT: job.get("variant") or "",
                                  TAG_SCORED_INPUT_FINGERPRINT: job["input_fingerprint"]})
    run_id = run.info.run_id
    params = {"model": job["model"], "version": job["version"], "variant": job.get("variant") or "-",
              "inputs": ", ".join(files)[:5000], "output": job["output"]}
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(k, float(job[k]), 0, 0) for k in ("rows_in", "rows_scored", "rows_rejected",
                                                                      "seconds")])
    client.set_terminated(run_id, "FINISHED")
    entry = audit_record(caller(settings), AuditEvent.SCORE, version=str(job["version"]),
                         variant=job.get("variant"), inputs=files[:20], input_fingerprint=job["input_fingerprint"],
                         rows_in=job["rows_in"], rows_scored=job["rows_scored"],
                         rows_rejected=job["rows_rejected"], output=job["output"], run_id=run_id)
    ModelStore(settings).append_audit(job["model"], entry)
    return run_id
