"""The one vocabulary of MLflow tags CivicML writes and reads: every ``civicml.*`` tag is named here once.

A tag's name is its meaning to every layer: training writes the run's, the registry the version's and the
registered model's, tuning the study's. ``MEANINGS`` is the table docs/architecture.md prints and the layering
test checks: a ``"civicml.*"`` string anywhere else in the code is a test failure.
"""

from __future__ import annotations

# -- a training run (projects) --------------------------------------------------------------------------------
TAG_USE_CASE = "civicml.use_case"
TAG_USE_CASE_SHA256 = "civicml.use_case_sha256"
TAG_FAMILY = "civicml.family"
TAG_DATA_FINGERPRINT = "civicml.data_fingerprint"
TAG_CODE_VERSION = "civicml.code_version"
TAG_MODEL_URI = "civicml.model_uri"
TAG_PRUNED = "civicml.pruned"
TAG_TEXT_ENCODER_PRECISION = "civicml.text_encoder_precision"

# -- a study (tuning) -----------------------------------------------------------------------------------------
TAG_STUDY = "civicml.study"
TAG_STUDY_RUN_ID = "civicml.study_run_id"
TAG_TRIAL = "civicml.trial"
TAG_ROLE = "civicml.role"
TAG_TRIAL_STATE = "civicml.trial_state"
TAG_FAILURE = "civicml.failure"
TAG_STORAGE_KIND = "civicml.storage_kind"
TAG_SAMPLER = "civicml.sampler"
TAG_PRUNER = "civicml.pruner"
TAG_DIRECTION = "civicml.direction"
TAG_OBJECTIVES = "civicml.objectives"
TAG_FAMILIES = "civicml.families"
TAG_BEST_TRIAL = "civicml.best_trial"
TAG_BEST_RUN_ID = "civicml.best_run_id"
TAG_BEST_PARAMS = "civicml.best_params"
TAG_SELECTION_RULE = "civicml.selection_rule"
TAG_PARETO_FRONT = "civicml.pareto_front"
ATTR_BASELINE = "civicml.baseline"  # an Optuna trial's user attribute: the enqueued baseline trial
ATTR_WARM_START = "civicml.warm_start"  # an Optuna trial's user attribute: the earlier trial a retraining repeats

# -- a model version (registry) -------------------------------------------------------------------------------
TAG_REGISTERED_BY = "civicml.registered_by"
TAG_REGISTERED_AT = "civicml.registered_at"
TAG_REGISTERED_AUTH = "civicml.registered_auth"
TAG_REGISTERED_MODEL = "civicml.registered_model"
TAG_SOURCE = "civicml.source"
TAG_TASK = "civicml.task"
TAG_SHA256 = "civicml.sha256"
TAG_MANIFEST = "civicml.manifest"
TAG_SIGNATURE = "civicml.signature"
TAG_REGISTRATION = "civicml.registration"
TAG_MODEL_CARD = "civicml.model_card"
TAG_MODEL_CARD_SHA256 = "civicml.model_card.sha256"
TAG_RULES_FIDELITY = "civicml.rules_fidelity"
TAG_RULES_CHECKED = "civicml.rules_checked"
TAG_INSIGHTS = "civicml.insights"
TAG_VARIANT = "civicml.variant"
TAG_VARIANT_OF = "civicml.variant_of"
TAG_VARIANT_GATE = "civicml.variant_gate"
TAG_VARIANT_VERDICTS = "civicml.variant_verdicts"
TAG_RUNTIME = "civicml.runtime"
TAG_PARENT_RUN_ID = "civicml.parent_run_id"
TAG_VARIANT_RUN_ID = "civicml.variant_run_id"

# -- a retrained version (monitoring.retrain) -----------------------------------------------------------------
TAG_RETRAINED_FROM = "civicml.retrained_from"
TAG_WARM_START_STUDY = "civicml.warm_start_study"
TAG_TRAFFIC_ROWS = "civicml.traffic_rows"
TAG_TRAFFIC_WINDOW = "civicml.traffic_window"
TAG_TRAFFIC_FINGERPRINT = "civicml.traffic_fingerprint"

# -- a batch scoring job's run (serving.scoring, registry.jobs) -----------------------------------------------
TAG_SCORED_MODEL = "civicml.scored_model"
TAG_SCORED_VERSION = "civicml.scored_version"
TAG_SCORED_VARIANT = "civicml.scored_variant"
TAG_SCORED_INPUT_FINGERPRINT = "civicml.scored_input_fingerprint"

# -- a registered model (registry) ----------------------------------------------------------------------------
TAG_POLICY = "civicml.policy"
TAG_POLICY_SHA256 = "civicml.policy.sha256"
TAG_POLICY_SOURCE = "civicml.policy.source"
TAG_ROLLOUT = "civicml.rollout"
AUDIT_PREFIX = "civicml.audit."  # + a sequence number: one audited event per tag

MEANINGS: dict[str, str] = {
    TAG_USE_CASE: "the use case a run trained (a name, or a use-case file's path)",
    TAG_USE_CASE_SHA256: "digest of the use-case file the run read",
    TAG_FAMILY: "the model family trained (logreg, boosting, minilm_linear, ...)",
    TAG_DATA_FINGERPRINT: "hash of the integrated dataset's content and schema",
    TAG_CODE_VERSION: "the git commit the code ran at, where known",
    TAG_MODEL_URI: "where the run logged its model (runs:/...)",
    TAG_PRUNED: "true when Optuna pruned the trial's training",
    TAG_TEXT_ENCODER_PRECISION: "the text encoder's precision (fp32, int8)",
    TAG_STUDY: "the Optuna study a run belongs to",
    TAG_STUDY_RUN_ID: "the study's parent MLflow run",
    TAG_TRIAL: "the trial number of a nested run",
    TAG_ROLE: "a study's run: parent or trial",
    TAG_TRIAL_STATE: "the trial's Optuna state as last seen (COMPLETE, PRUNED, FAIL)",
    TAG_FAILURE: "why a trial failed, in one line",
    TAG_STORAGE_KIND: "the study's storage: sqlite, journal or postgresql",
    TAG_SAMPLER: "the study's sampler",
    TAG_PRUNER: "the study's pruner",
    TAG_DIRECTION: "each objective's direction, comma-separated",
    TAG_OBJECTIVES: "the study's objectives, comma-separated",
    TAG_FAMILIES: "the families the study searches",
    TAG_BEST_TRIAL: "the trial the study hands on",
    TAG_BEST_RUN_ID: "the MLflow run of that trial",
    TAG_BEST_PARAMS: "that trial's parameters (the study summary)",
    TAG_SELECTION_RULE: "the rule that picked a trial from the Pareto front",
    TAG_PARETO_FRONT: "the Pareto front's trial numbers",
    ATTR_BASELINE: "an Optuna user attribute marking the enqueued baseline trial",
    ATTR_WARM_START: "an Optuna user attribute: the champion study's trial a retraining's enqueued trial repeats",
    TAG_REGISTERED_BY: "who registered the version",
    TAG_REGISTERED_AT: "when (UTC, ISO 8601)",
    TAG_REGISTERED_AUTH: "how that person was identified (token, environment)",
    TAG_REGISTERED_MODEL: "the registered model a variant belongs to",
    TAG_SOURCE: "the model URI the version was registered from",
    TAG_TASK: "classification or regression",
    TAG_SHA256: "digest of every file of the version's model (verified on every load)",
    TAG_MANIFEST: "per-file digests (JSON, split over .0, .1, ... when long)",
    TAG_SIGNATURE: "the MLmodel signature at registration (JSON)",
    TAG_REGISTRATION: "pending:<host>:<pid>:<epoch> until every step is done, then complete",
    TAG_MODEL_CARD: "the model card's artifact path",
    TAG_MODEL_CARD_SHA256: "the model card's digest",
    TAG_RULES_FIDELITY: "how closely the surrogate rules follow the model on held-out rows",
    TAG_RULES_CHECKED: "what that fidelity was measured as, on how many rows",
    TAG_INSIGHTS: "where the rules, charts and map of the version are",
    TAG_VARIANT: "the kind of a compressed or converted variant (int8, pruned, distilled, onnx, bf16)",
    TAG_VARIANT_OF: "the version a variant was built from",
    TAG_VARIANT_GATE: "the variant's verdict against its parent (passed, refused)",
    TAG_VARIANT_VERDICTS: "each measured verdict of the variant (JSON)",
    TAG_RUNTIME: "the runtime that serves a variant (onnx, paddle, pyfunc)",
    TAG_PARENT_RUN_ID: "the parent version's run",
    TAG_VARIANT_RUN_ID: "the run that built and measured the variant",
    TAG_RETRAINED_FROM: "the champion version a retraining started from (`civicml retrain`)",
    TAG_WARM_START_STUDY: "the champion's study whose trials warm-started the retraining's study",
    TAG_TRAFFIC_ROWS: "labelled served answers added to the retraining's training set",
    TAG_TRAFFIC_WINDOW: "the window they were answered in (length, first and last answer, UTC)",
    TAG_TRAFFIC_FINGERPRINT: "hash of those rows (their masked inputs and outcomes)",
    TAG_SCORED_MODEL: "the registered model a batch scoring job answered with",
    TAG_SCORED_VERSION: "its version",
    TAG_SCORED_VARIANT: "its variant, if one answered",
    TAG_SCORED_INPUT_FINGERPRINT: "sha256 over the job's input files (their ETags on S3)",
    TAG_POLICY: "the promotion policy recorded for the model (YAML)",
    TAG_POLICY_SHA256: "that policy's digest",
    TAG_POLICY_SOURCE: "where that policy came from (project file, policy file)",
    TAG_ROLLOUT: "the canary or shadow rollout in force (JSON: version, weight, window)",
    AUDIT_PREFIX: "one audited event per tag (+ sequence number; JSON)",
}


def table() -> str:
    """The vocabulary as a Markdown table (docs/architecture.md holds it: ``python -m civicml.tags``)."""
    rows = ["| tag | meaning |", "|---|---|"]
    rows += [f"| `{tag}` | {meaning} |" for tag, meaning in MEANINGS.items()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
