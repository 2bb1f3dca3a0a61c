"""Public records of a live model, filled from what the registry knows plus what people wrote.

``civicml transparency NAME`` (:func:`write_records`) writes, for the version ``champion`` serves (or any
version or alias asked for):

=============  ===========================================================================================
``eurocities``  ``eurocities.json``: the Eurocities algorithmic transparency standard v0.3.1, its 49 fields
                (the field facts in ``transparency_eurocities_v0_3_1.schema.json`` beside this module)
``atrs``        ``atrs.json`` and ``atrs.md``: the UK Algorithmic Transparency Recording Standard v3.0's
                fields, tier 1 and the five tier-2 sections
``annex-iv``    ``annex-iv.md`` and ``annex-iv.html``: the EU AI Act's Annex IV technical documentation,
                its nine sections, each filled or marked "to be written by people"
=============  ===========================================================================================

The registry's facts (:func:`gather`): the use case and what it does, its sources and privacy rules, the
model family, the held-out figures of the latest model card (per class and per district), the governing
policy and the gates the version passed, lineage, the audit trail (promotions, refusals, roll-backs,
canaries) and the roll-out in force. People's words come from the use case's ``transparency.yaml``
(:mod:`registry.transparency_file`); a field nobody wrote is left out of the Eurocities record (which
then does not validate: :func:`schema_problems` says why), null in ATRS, and marked in Annex IV.

Records are not stored: each call regenerates them from the facts as they are then, so a record never
describes a version that no longer serves. Every record names the version it describes and when it was
generated; publish them after each promotion (docs/accountability.md).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from civicml.errors import InvalidInput, NotFound
from civicml.settings import Settings
from civicml.tags import (TAG_CODE_VERSION, TAG_DATA_FINGERPRINT, TAG_FAMILY, TAG_REGISTERED_AT,
                          TAG_REGISTERED_BY, TAG_STUDY, TAG_TASK, TAG_USE_CASE)
from registry import card as cards, transparency_file
from registry.guard import authorize, now
from registry.inputs import governing
from registry.lifecycle import champion_history
from registry.queries import CHAMPION, model_card
from registry.rollout import current as current_rollout
from registry.store import ModelStore, ModelVersion
from registry.use_cases import use_case_named

FORMATS = ("eurocities", "atrs", "annex-iv")
EUROCITIES_VERSION = "0.3.1"
ATRS_VERSION = "3.0"
SCHEMA_FILE = Path(__file__).with_name("transparency_eurocities_v0_3_1.schema.json")
TO_BE_WRITTEN = "To be written by people"


@dataclass
class Facts:
    """What the registry knows about one version, and what people wrote about its use case."""

    name: str
    version: ModelVersion
    ref: str  # what was asked for: an alias or a version number
    generated: str  # UTC, ISO 8601
    use_case: str | None
    description: str
    task: str
    family: str | None
    inputs: list[dict[str, Any]]
    data: dict[str, Any]
    card: dict[str, Any]
    policy: dict[str, Any]
    high_risk: bool
    gates: dict[str, Any] | None  # the latest promote record of this version: when, who, gates
    history: dict[str, Any]
    rollout: dict[str, Any] | None
    human: transparency_file.HumanFields
    lineage: dict[str, Any] = field(default_factory=dict)

    @property
    def describes(self) -> dict[str, Any]:
        """The version a record describes, as every record names it."""
        return {"model": self.name, "version": self.version.version, "aliases": sorted(self.version.aliases),
                "sha256": self.version.sha256, "registered_at": self.version.tags.get(TAG_REGISTERED_AT),
                "generated_at": self.generated, "generated_by": "CivicML from its model registry"}

    def people(self, key: str) -> str:
        return self.human.get(key)


def schema() -> dict[str, Any]:
    """The Eurocities v0.3.1 field list as a JSON Schema (written for CivicML; its source is cited inside)."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


# -- the facts -------------------------------------------------------------------------------------------------
def gather(name: str, ref: str | int = CHAMPION, settings: Settings | None = None) -> Facts:
    """What the registry knows about ``name`` at ``ref`` (default: the version ``champion`` serves)."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    authorize(settings, "read", name, store)
    try:
        mv = store.version_at(name, ref)
    except NotFound:
        if str(ref) == CHAMPION:
            raise NotFound(f"model '{name}' has no champion: nothing is live to describe (promote a version, or "
                           f"name one with --version)") from None
        raise
    if mv.pending:
        raise NotFound(f"model '{name}' has no version {mv.version} (its registration has not completed)")
    tags = mv.tags
    use_case = _use_case(tags.get(TAG_USE_CASE))
    human = transparency_file.read(use_case) if use_case is not None else \
        transparency_file.HumanFields(Path(transparency_file.FILE_NAME))
    policy = governing(store, name)
    trail = store.audit_records(name)
    rollout = current_rollout(name, settings)
    return Facts(name=name, version=mv, ref=str(ref), generated=now(),
                 use_case=getattr(use_case, "name", None) or tags.get(TAG_USE_CASE),
                 description=getattr(use_case, "description", "") or "", task=tags.get(TAG_TASK) or getattr(
                     use_case, "task", None) or "classification", family=tags.get(TAG_FAMILY),
                 inputs=_inputs(mv), data=_data(store, mv), card=_card(name, mv, settings),
                 policy=policy.to_record(), high_risk=bool(policy.accountability and policy.accountability.high_risk),
                 gates=_last_promotion(trail, mv.version), history=_history(trail),
                 rollout=asdict(rollout) if rollout else None, human=human,
                 lineage={k: tags.get(t) for k, t in (("code_version", TAG_CODE_VERSION), ("study", TAG_STUDY),
                                                      ("data_fingerprint", TAG_DATA_FINGERPRINT),
                                                      ("registered_by", TAG_REGISTERED_BY))} | {"run_id": mv.run_id})


def _use_case(recorded: str | None):
    try:
        return use_case_named(recorded)
    except Exception:  # noqa: BLE001 - a use-case file moved away: the record says what the registry knows
        return None


def _inputs(mv: ModelVersion) -> list[dict[str, Any]]:
    try:
        signature = mv.signature or {}
    except KeyError:
        return []
    try:
        inputs = json.loads(signature.get("inputs") or "[]")
    except (TypeError, ValueError):
        return []
    return [{"name": c.get("name", "(tensor)"), "type": c.get("type") or c.get("tensor-spec", {}).get("dtype")}
            for c in inputs if isinstance(c, dict)]


def _data(store: ModelStore, mv: ModelVersion) -> dict[str, Any]:
    if not mv.run_id:
        return {}
    try:
        return json.loads(store.read_run_text(f"runs:/{mv.run_id}/data/dataset.json"))
    except (NotFound, ValueError):
        return {}


def _card(name: str, mv: ModelVersion, settings: Settings) -> dict[str, Any]:
    try:
        return cards.read_card(model_card(name, mv.version, settings))
    except Exception:  # noqa: BLE001 - no card (or one that fails its checksum): the record says figures are missing
        return {}


def _last_promotion(trail: list[dict[str, Any]], version: str) -> dict[str, Any] | None:
    found = [r for r in trail if r.get("action") == "promote" and r.get("to") == version]
    if not found:
        return None
    r = found[-1]
    return {"when": r.get("when"), "who": r.get("who"), "alias": r.get("alias"), "from": r.get("from"),
            "gates": r.get("gates", []), "forced": bool(r.get("forced")), "holdout": r.get("holdout")}


def _history(trail: list[dict[str, Any]]) -> dict[str, Any]:
    """Changes of what serves, from the audit trail: promotions, refusals, roll-backs, canaries."""
    changes = [r for r in trail if r.get("action") in ("promote", "rollback", "canary", "shadow", "rollout-stop")]
    promotions = [r for r in trail if r.get("action") == "promote" and r.get("alias") == CHAMPION]
    return {"records": len(trail), "champions": champion_history(trail),
            "registered": sum(r.get("action") == "register" for r in trail),
            "refused": sum(r.get("action") == "refuse" for r in trail),
            "rollbacks": sum(r.get("action") == "rollback" for r in trail),
            "first_promotion": promotions[0]["when"] if promotions else None,
            "last_change": changes[-1]["when"] if changes else None,
            "changes": [{k: r.get(k) for k in ("when", "action", "who", "from", "to", "version", "weight", "reason")
                         if r.get(k) is not None} for r in changes][-20:]}


# -- sentences from facts ---------------------------------------------------------------------------------------
def _figures(f: Facts) -> str:
    card = f.card
    if not card.get("metrics"):
        return "No held-out figures are recorded on the model card."
    figures = ", ".join(f"{k} {v:.3f}" for k, v in sorted(card["metrics"].items()))
    text = f"On {card.get('source') or 'the held-out set'}: {figures}."
    base = card.get("baseline") or {}
    if base.get("what"):
        text += " A trivial baseline (" + base["what"] + ") scores " + ", ".join(
            f"{k} {v:.3f}" for k, v in sorted(base.items()) if k != "what") + "."
    for also in card.get("also", []):
        text += f" {also['metric']} {also['value']:.3f} on {also['what']} ({also['rows']} rows of {also['set']})."
    return text + _groups(f)


def _groups(f: Facts) -> str:
    out = ""
    for column, table in (f.card.get("per_group") or {}).items():
        score = "accuracy" if any("accuracy" in v for v in table.values()) else "mae"
        values = {g: v.get(score) for g, v in table.items() if v.get(score) is not None}
        if values:
            worst, best = (min, max) if score == "accuracy" else (max, min)
            low, high = worst(values, key=values.get), best(values, key=values.get)
            out += (f" Per {column} ({len(values)} groups), {score} ranges from {values[low]:.3f} ({low}) to "
                    f"{values[high]:.3f} ({high}).")
    return out


def _sources(f: Facts) -> str:
    data = f.data
    if not data:
        return "The source run records no data description."
    sources = ", ".join(Path(str(s)).name for s in data.get("sources", [])) or "not recorded"
    cleaning = data.get("cleaning") or {}
    rows = cleaning.get("rows") or cleaning.get("rows_kept")
    return (f"Integrated from the source files {sources}" + (f" ({rows} rows after cleaning)" if rows else "")
            + f"; data fingerprint {str(data.get('fingerprint', '?'))[:16]}.")


def _privacy(f: Facts) -> str:
    privacy = (f.data.get("cleaning") or {}).get("privacy")
    if isinstance(privacy, dict):
        said = [f"{what} {', '.join(cols)}" for what, cols in privacy.items() if cols]
        return "Personal data handled at integration, before training: " + ("; ".join(said) or "none declared") + "."
    return ("Personal data is masked when the sources are integrated, before training: e-mail addresses, phone "
            "numbers and names in free text are replaced, and columns of names are dropped.")


def _gates(f: Facts) -> str:
    if not f.gates:
        return "This version has not been promoted through the gates (no promotion in its audit trail)."
    passed = "; ".join(f"{g['gate']}: {g['detail']}" for g in f.gates["gates"])
    return (f"Promoted to '{f.gates['alias']}' on {str(f.gates['when'])[:10]} by {f.gates['who']} after these gates "
            f"passed: {passed}." + (" The input-contract gate was forced (audited)." if f.gates["forced"] else ""))


def _policy(f: Facts) -> str:
    p = f.policy
    floors = [f"{p.get('metric')} >= {p.get('min_value')}"] if p.get("min_value") is not None else []
    floors += [f"{k} >= {v}" for k, v in (p.get("thresholds") or {}).items()]
    source = Path(str(p["source"])).name if p.get("source") else "built-in"
    return (f"Promotion policy {source} (revision {p.get('version') or '-'}, sha256 "
            f"{str(p.get('sha256'))[:12]}): re-evaluated on a held-out set at every promotion; "
            f"{', '.join(floors) or 'no absolute floor'}; not worse than the serving version by more than "
            f"{p.get('max_regression', 0)} {p.get('metric')}" + ("; people's accountability fields required "
                                                                 "(high risk)" if f.high_risk else "") + ".")


def _rollback(f: Facts) -> str:
    h = f.history
    champions = h["champions"]
    previous = champions[-2] if len(champions) > 1 else None
    text = ("Any release manager can return the alias to the previous version at once (`civicml rollback`, "
            "audited); serving replicas follow within their refresh interval. ")
    text += f"Previous champion: version {previous}. " if previous else "No earlier champion to return to. "
    text += f"Roll-backs so far: {h['rollbacks']}."
    if f.rollout:
        r = f.rollout
        text += (f" A {r['mode']} of version {r['version']} receives {r['weight']:g}% of requests and stops by itself "
                 f"above an error rate of {r['max_error_rate']:g}" + (f" or a p95 of {r['max_p95_ms']:g} ms"
                                                                      if r.get("max_p95_ms") else "") + ".")
    return text + (" Answers already given are not recalled: people review them through the objection "
                   "procedure.")


def _describes_line(f: Facts) -> str:
    d = f.describes
    return (f"This record describes {d['model']} version {d['version']} (sha256 {str(d['sha256'])[:12]}), "
            f"generated {d['generated_at']} by CivicML from its model registry.")


def _explanation(f: Facts) -> str:
    inputs = ", ".join(c["name"] for c in f.inputs) or "not recorded"
    task = "assigns each case one of a fixed set of answers" if f.task == "classification" else "predicts a number"
    what = f.description or "The use case records no description."
    return (f"{_describes_line(f)} {what} The model ({f.family or 'family not recorded'}, a {f.task} model "
            f"trained with CivicML) {task} from these inputs: {inputs}. It learnt from historical cases: "
            f"{_sources(f)} {_privacy(f)}"
            + (" Before it could serve, it was re-evaluated on data it never saw and compared with the version "
               "serving then." if f.gates else "") + f" {_figures(f)} {_gates(f)} Each answer comes "
            f"with the version that gave it, a confidence, and an explanation of the inputs that weighed most "
            f"(POST /explain); the model card lists its known limitations.")


# -- Eurocities v0.3.1 ------------------------------------------------------------------------------------------
# record field -> transparency.yaml field, for the fields people write as they are
_EUROCITIES_PEOPLE = {
    "organization": "organisation", "department": "department", "contact_email": "contact_email",
    "contact_phone": "contact_phone", "contact_name": "contact_name", "area": "area", "domain": "domain",
    "website": "website", "remark": "remark", "decision_making_process": "decision_making_process", "goal": "goal",
    "impact": "impact", "proportionality": "proportionality", "lawful_basis": "lawful_basis",
    "documentation": "documentation", "DPIA_description": "dpia", "DPIA_url": "dpia_url",
    "alternatives_considered": "alternatives_considered", "product_information": "product_information",
    "codebase_url": "codebase_url", "product_page": "product_page", "AIA_description": "impact_assessment",
    "AIA_url": "impact_assessment_url", "human_intervention": "human_intervention",
    "objection_procedure": "objection_procedure", "revision_note": "revision_note",
}


def _both(people: str, registry_text: str) -> str:
    """People's words first, then what the registry adds; only the registry's when people wrote nothing."""
    return f"{people}\n\n{registry_text}" if people else registry_text


def _day(text: str | None) -> str | None:
    return str(text)[:10] if text else None


def eurocities(f: Facts) -> dict[str, Any]:
    """The Eurocities record: registry facts and people's fields; a field nobody wrote is left out."""
    p = f.people
    record: dict[str, Any] = {k: p(v) for k, v in _EUROCITIES_PEOPLE.items() if p(v)}
    record.update({
        "name": p("title") or f.name,
        "description_short": (p("description_short") or f.description or f"{f.name}: a {f.task} model")[:150],
        "status": p("status") or ("operational" if CHAMPION in f.version.aliases else "development"),
        "training_data": _both(p("training_data"), f"{_sources(f)} {_privacy(f)}"),
        "source_data": "Each request is answered from these inputs: " + (
            ", ".join(f"{c['name']} ({c['type']})" for c in f.inputs) or "not recorded") + ". " + _privacy(f),
        "connected_data_sources": _sources(f) + " The model itself reads no other database when it answers.",
        "algorithm_type": "self-learning",
        "description": _explanation(f),
        "methods_and_models": f"{f.name} version {f.version.version}: {f.family or 'not recorded'} ({f.task}), "
                              f"trained and served with CivicML (MLflow models, scikit-learn or Paddle).",
        "performance": f"{_figures(f)} {_policy(f)}",
        "monitoring": _both(p("monitoring"), f"{_gates(f)} {_policy(f)} Live answers can be recorded and "
                                             f"compared with later outcomes (`civicml monitor`)."),
        "type": "predictive",
        "rollback": _rollback(f),
        "remark": _both(p("remark"), _describes_line(f)),
        "standard_version": EUROCITIES_VERSION,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"civicml:{f.name}")),
        "lang": p("lang") or "en",
        "publication_date": p("publication_date") or _day(f.history["first_promotion"]) or f.generated[:10],
        "last_change_date": max(d for d in (_day(f.history["last_change"]), _day(f.version.tags.get(
            TAG_REGISTERED_AT)), f.human.reviewed.date().isoformat() if f.human.reviewed else None) if d),
        "keywords": p("keywords") or ", ".join(filter(None, (f.use_case, f.task, f.family, "CivicML"))),
    })
    if p("risks"):
        limits = f.card.get("limitations") or []
        record["risks"] = _both(p("risks"), "Known limitations measured by CivicML: " + " ".join(limits)) \
            if limits else p("risks")
    if p("risk_category") or f.high_risk:
        record["risk_category"] = p("risk_category") or "high risk"
    if p("data_bias") or f.card.get("per_group"):
        record["data_bias"] = _both(p("data_bias"), _groups(f).strip())
    record["revision_date"] = p("revision_date") or _revision_date(f, record["last_change_date"])
    return {k: record[k] for k in schema()["properties"] if record.get(k)}


def _revision_date(f: Facts, last_change: str) -> str:
    spec_days = (f.policy.get("accountability") or {}).get("max_age_days")
    if f.human.reviewed is not None and spec_days:
        return (f.human.reviewed.date() + dt.timedelta(days=int(spec_days))).isoformat()
    return (dt.date.fromisoformat(last_change) + dt.timedelta(days=365)).isoformat()


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def schema_problems(record: dict[str, Any], rules: dict[str, Any] | None = None) -> list[str]:
    """Why ``record`` does not meet the Eurocities schema ([] when it does): a small checker of what the schema
    file states (required, enum, const, pattern, maxLength, email and date formats), so that the CLI can say
    what people still owe without a JSON Schema library; the tests validate with ``jsonschema`` itself."""
    rules = rules or schema()
    problems = [f"{k}: missing (required)" for k in rules["required"] if not record.get(k)]
    for key, value in record.items():
        rule = rules["properties"].get(key)
        if rule is None:
            problems.append(f"{key}: not a field of the standard")
            continue
        if not isinstance(value, str):
            problems.append(f"{key}: must be text")
        elif "enum" in rule and value not in rule["enum"]:
            problems.append(f"{key}: {value!r} is not one of {', '.join(rule['enum'])}")
        elif "const" in rule and value != rule["const"]:
            problems.append(f"{key}: must be {rule['const']!r}")
        elif "pattern" in rule and not re.search(rule["pattern"], value):
            problems.append(f"{key}: {value!r} does not match {rule['pattern']}")
        elif len(value) > rule.get("maxLength", len(value)):
            problems.append(f"{key}: longer than {rule['maxLength']} characters")
        elif rule.get("format") == "email" and not _EMAIL.match(value):
            problems.append(f"{key}: {value!r} is not an e-mail address")
        elif rule.get("format") == "date" and not _is_date(value):
            problems.append(f"{key}: {value!r} is not a date (YYYY-MM-DD)")
    return problems


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
        return len(text) == 10
    except ValueError:
        return False


# -- ATRS v3.0 ---------------------------------------------------------------------------------------------------
def atrs(f: Facts) -> dict[str, Any]:
    """The ATRS record: tier 1 and the five tier-2 sections, with the template's field names (v3.0); a field
    nobody wrote is null and named in ``to_be_written_by_people``."""
    p = lambda key: f.people(key) or None  # noqa: E731 - null, not "", for a field nobody wrote
    card_limits = " ".join(f.card.get("limitations") or [])
    record = {
        "standard": f"Algorithmic Transparency Recording Standard v{ATRS_VERSION}",
        "describes": f.describes,
        "metadata": {"standard_version": ATRS_VERSION, "title": p("title") or f.name,
                     "organisation_name": p("organisation"), "phase": _phase(f), "region": p("area"),
                     "one_sentence_description": p("description_short") or f.description or None,
                     "date_of_completion": _day(f.history["first_promotion"]) or f.generated[:10],
                     "date_updated": f.generated[:10]},
        "tier_1": {"name": p("title") or f.name, "description": f.description + " " + _gates(f),
                   "website_url": p("website"), "contact_email": p("contact_email")},
        "tier_2": {
            "owner_and_responsibility": {
                "organisation_or_department": p("organisation"), "team": p("department"),
                "senior_responsible_owner": p("responsible_owner"),
                "external_supplier_involvement": p("external_supplier")},
            "description_and_rationale": {
                "detailed_description": _explanation(f), "scope": _scope(f), "benefit": p("goal"),
                "previous_process": p("previous_process"), "alternatives_considered": p("alternatives_considered")},
            "decision_making_process": {
                "process_integration": p("decision_making_process"),
                "provided_information": "Each answer: " + ("the label, the probability of each class and a "
                                                           "confidence band" if f.task == "classification" else
                                                           "the predicted value and an interval") +
                                        ", the version that answered, an answer id, and on request the inputs that "
                                        "weighed most.",
                "frequency_and_scale_of_usage": p("frequency_and_scale"),
                "human_decisions_and_review": p("human_intervention"), "required_training": p("required_training"),
                "appeals_and_review": p("objection_procedure")},
            "tool_specification": _atrs_tool(f, p, card_limits),
            "risks_mitigations_and_impact_assessments": {
                "impact_assessment": "; ".join(filter(None, (p("dpia"), p("impact_assessment")))) or None,
                "risks_and_mitigations": (_both(p("risks"), "Measured limitations: " + card_limits)
                                          if p("risks") else None)},
        },
    }
    record["to_be_written_by_people"] = _nulls(record)
    return record


def _phase(f: Facts) -> str:
    return f.people("status") or ("production" if CHAMPION in f.version.aliases else "development")


def _scope(f: Facts) -> str:
    out_of_scope = f.card.get("out_of_scope") or "any use other than the one above"
    return f"{f.description or 'Not recorded.'} Out of scope: {out_of_scope}"


def _atrs_tool(f: Facts, p, card_limits: str) -> dict[str, Any]:
    return {
        "system_architecture": "A model registered in CivicML's MLflow registry (version, files checked against "
                               "their SHA-256 on every load) and served by CivicML endpoints that follow the "
                               "'champion' alias (MLflow scoring protocol and Open Inference Protocol V2).",
        "phase": _phase(f),
        "maintenance": _both(p("monitoring") or "", f"{_policy(f)} {_rollback(f)}"),
        "models": f"{f.name} version {f.version.version}",
        "model_specification": {
            "model_name": f.name, "model_version": f.version.version,
            "model_task": f"{f.task}: {f.description}".strip(": "),
            "model_input": ", ".join(f"{c['name']} ({c['type']})" for c in f.inputs) or None,
            "model_output": "a label with class probabilities" if f.task == "classification" else "a number",
            "model_architecture": f.family, "model_performance": f"{_figures(f)} {card_limits}".strip(),
            "datasets": _sources(f),
            "dataset_purposes": "training and validation (a split of the integrated data); a separate held-out "
                                "set, regenerated or named by the policy, for the promotion gates."},
        "data_specification": {
            "source_data_name": ", ".join(Path(str(s)).name for s in f.data.get("sources", [])) or None,
            "data_modality": "tabular and free text" if any(c["type"] == "string" for c in f.inputs) else
                             ("tabular" if f.inputs else None),
            "data_description": _sources(f), "data_quantities": _sources(f), "sensitive_attributes": _privacy(f),
            "data_completeness_and_representativeness": _groups(f).strip() or None,
            "source_data_url": p("source_data_url"), "data_collection": p("data_collection"),
            "data_cleaning": json.dumps((f.data.get("cleaning") or {}), default=str) or None,
            "data_sharing_agreements": p("data_sharing_agreements"),
            "data_access_and_storage": p("data_access_and_storage")},
    }


def _nulls(node: Any, where: str = "") -> list[str]:
    if isinstance(node, dict):
        return [name for k, v in node.items() for name in _nulls(v, f"{where}.{k}" if where else k)]
    return [where] if node is None else []


def _markdown(node: dict[str, Any], level: int = 2) -> list[str]:
    lines: list[str] = []
    for key, value in node.items():
        title = key.replace("_", " ").capitalize()
        if isinstance(value, dict):
            lines += ["", "#" * level + " " + title] + _markdown(value, level + 1)
        elif isinstance(value, list):
            lines += ["", f"**{title}**: " + (", ".join(map(str, value)) or "none")]
        else:
            lines += ["", f"**{title}**: " + (str(value) if value not in (None, "") else f"*{TO_BE_WRITTEN}*")]
    return lines


def atrs_markdown(record: dict[str, Any]) -> str:
    d = record["describes"]
    head = [f"# Algorithmic transparency record: {record['tier_1']['name']}", "",
            f"*{record['standard']}; describes {d['model']} version {d['version']} (sha256 {str(d['sha256'])[:12]}), "
            f"generated {d['generated_at']} by CivicML from its registry and the use case's transparency.yaml.*"]
    body = {k: v for k, v in record.items() if k not in ("standard", "describes")}
    return "\n".join(head + _markdown(body)) + "\n"


# -- EU AI Act, Annex IV -------------------------------------------------------------------------------------------
ANNEX_IV_SECTIONS = (
    "1. General description of the AI system",
    "2. Detailed description of the elements of the AI system and of the process for its development",
    "3. Monitoring, functioning and control of the AI system",
    "4. Appropriateness of the performance metrics",
    "5. Risk management system (Article 9)",
    "6. Relevant changes made through the lifecycle",
    "7. Harmonised standards applied, or the solutions adopted instead",
    "8. EU declaration of conformity (Article 47)",
    "9. Post-market monitoring (Article 72)",
)


def annex_iv(f: Facts) -> list[tuple[str, list[str], list[tuple[str, str]]]]:
    """The nine sections: (title, what the registry fills, [(what people write, its transparency.yaml field)])."""
    inputs = ", ".join(f"{c['name']} ({c['type']})" for c in f.inputs) or "not recorded"
    lineage = f.lineage
    return [
        (ANNEX_IV_SECTIONS[0], [
            f"Intended purpose: {f.description or 'not recorded by the use case'}",
            f"System and version: {f.name} version {f.version.version}, registered "
            f"{f.version.tags.get(TAG_REGISTERED_AT)} by {lineage.get('registered_by')}; files checked against "
            f"sha256 {f.version.sha256} on every load; code version {lineage.get('code_version') or 'not recorded'}.",
            "Interaction with other software: served over HTTP by CivicML endpoints (MLflow scoring protocol, Open "
            "Inference Protocol V2) and in batch on Spark, each answer naming the version that gave it."],
         [("Provider / responsible organisation", "organisation"), ("Responsible owner", "responsible_owner"),
          ("Lawful basis", "lawful_basis"), ("Instructions for use", "instructions_for_use")]),
        (ANNEX_IV_SECTIONS[1], [
            f"Method: {f.family or 'not recorded'} ({f.task}), trained in MLflow run {lineage.get('run_id')}"
            + (f", selected by the Optuna study {lineage['study']}" if lineage.get("study") else "") + ".",
            f"Data: {_sources(f)}", f"Privacy: {_privacy(f)}",
            "Validation and testing: a validation split during training; at promotion, re-evaluation on a held-out "
            f"set under the governing policy. {_gates(f)}"],
         [("Human oversight measures (Article 14)", "human_intervention"), ("Data collection", "data_collection")]),
        (ANNEX_IV_SECTIONS[2], [
            f"Inputs: {inputs}.", f"Performance: {_figures(f)}",
            "Known limitations: " + (" ".join(f.card.get("limitations") or []) or "none recorded")],
         [("Foreseeable unintended outcomes and risks", "risks"), ("Human oversight", "human_intervention"),
          ("How people object", "objection_procedure")]),
        (ANNEX_IV_SECTIONS[3], [_policy(f)], [("Why these metrics suit this use", "metrics_rationale")]),
        (ANNEX_IV_SECTIONS[4], ["Controls in CivicML: promotion gates re-evaluated on held-out data, refusals "
                                "audited, canary roll-outs that stop themselves, roll-back at once."],
         [("Risk-management system", "risk_management"), ("Data-protection impact assessment", "dpia")]),
        (ANNEX_IV_SECTIONS[5], _changes(f), []),
        (ANNEX_IV_SECTIONS[6], [], [("Standards applied", "harmonised_standards")]),
        (ANNEX_IV_SECTIONS[7], [], [("Declaration of conformity", "declaration_of_conformity")]),
        (ANNEX_IV_SECTIONS[8], [_rollback(f), "Served answers can be recorded (masked, sampled) and joined to later "
                                              "outcomes for live quality and drift reports (`civicml monitor`)."],
         [("Post-market monitoring plan", "post_market_monitoring")]),
    ]


def _changes(f: Facts) -> list[str]:
    h = f.history
    lines = [f"Audit trail: {h['records']} records; versions registered: {h['registered']}, promotions refused: "
             f"{h['refused']}, roll-backs: {h['rollbacks']}; champions in order: "
             f"{', '.join(h['champions']) or 'none yet'}."]
    for c in h["changes"]:
        what = {"promote": f"promoted version {c.get('to')} (from {c.get('from') or 'none'})",
                "rollback": f"rolled back from version {c.get('from')} to {c.get('to')}",
                "rollout-stop": "stopped a roll-out"}.get(c["action"], f"{c['action']} of version {c.get('version')}"
                                                                       f" at {c.get('weight')}%")
        lines.append(f"{str(c.get('when'))[:19]} {c.get('who')}: {what}" + (f" ({c['reason']})" if c.get("reason")
                                                                               else ""))
    return lines


def _annex_header(f: Facts) -> tuple[str, str]:
    d = f.describes
    return (f"Technical documentation (EU AI Act, Annex IV): {f.people('title') or f.name}",
            f"Describes {d['model']} version {d['version']} (sha256 {str(d['sha256'])[:12]}), generated "
            f"{d['generated_at']} by CivicML from its registry and the use case's transparency.yaml"
            + (f" (reviewed {f.human.reviewed.date()} by {f.human.reviewed_by or 'unnamed'})"
               if f.human.reviewed else "") + ".")


def annex_iv_markdown(f: Facts) -> str:
    title, sub = _annex_header(f)
    lines = [f"# {title}", "", f"*{sub}*"]
    for heading, facts, people in annex_iv(f):
        lines += ["", f"## {heading}", ""] + [f"- {line}" for line in facts]
        for label, key in people:
            lines += [f"- **{label}**: " + (f.people(key) or f"*{TO_BE_WRITTEN}* (transparency.yaml: `{key}`)")]
        if not facts and not people:
            lines.append(f"*{TO_BE_WRITTEN}*")
    return "\n".join(lines) + "\n"


def annex_iv_html(f: Facts) -> str:
    title, sub = _annex_header(f)
    e = html.escape
    parts = [f"<!doctype html><html lang=\"{e(f.people('lang') or 'en')}\"><head><meta charset=\"utf-8\">"
             f"<title>{e(title)}</title></head><body>", f"<h1>{e(title)}</h1>", f"<p><em>{e(sub)}</em></p>"]
    for heading, facts, people in annex_iv(f):
        items = [f"<li>{e(line)}</li>" for line in facts]
        items += [f"<li><strong>{e(label)}</strong>: " + (e(f.people(key)) if f.people(key) else
                                                          f"<em>{TO_BE_WRITTEN}</em> (transparency.yaml: "
                                                          f"<code>{e(key)}</code>)") + "</li>"
                  for label, key in people]
        parts += [f"<section><h2>{e(heading)}</h2><ul>{''.join(items)}</ul></section>"]
    return "\n".join(parts + ["</body></html>"]) + "\n"


# -- writing them ----------------------------------------------------------------------------------------------
@dataclass
class Written:
    """What :func:`write_records` wrote: the files, the version they describe, and what people still owe."""

    facts: Facts
    files: list[Path]
    eurocities_problems: list[str]  # [] when the Eurocities record meets the schema
    to_be_written: list[str]  # transparency.yaml fields nobody wrote and CivicML has no default for


def write_records(name: str, out: str | Path, formats: tuple[str, ...] = FORMATS, ref: str | int = CHAMPION,
                  settings: Settings | None = None) -> Written:
    """Write ``name``'s records (``formats``, :data:`FORMATS`) of the version at ``ref`` into folder ``out``."""
    unknown = [x for x in formats if x not in FORMATS]
    if unknown:
        raise InvalidInput(f"unknown record format '{unknown[0]}' (known: {', '.join(FORMATS)})")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InvalidInput(f"--out {folder} is a file, not a folder")
    f = gather(name, ref, settings)
    texts: dict[str, str] = {}
    problems: list[str] = []
    if "eurocities" in formats:
        record = eurocities(f)
        problems = schema_problems(record)
        texts["eurocities.json"] = json.dumps({**record}, indent=2, ensure_ascii=False) + "\n"
    if "atrs" in formats:
        record = atrs(f)
        texts["atrs.json"] = json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n"
        texts["atrs.md"] = atrs_markdown(record)
    if "annex-iv" in formats:
        texts["annex-iv.md"], texts["annex-iv.html"] = annex_iv_markdown(f), annex_iv_html(f)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for file_name, text in texts.items():
        (folder / file_name).write_text(text, encoding="utf-8")
        files.append(folder / file_name)
    return Written(f, files, problems, [k for k in f.human.empty if k not in transparency_file.DEFAULTED])


# the registry's face names (registry/__init__.py)
TRANSPARENCY_FORMATS = FORMATS
transparency_facts = gather
write_transparency = write_records
eurocities_record = eurocities
atrs_record = atrs
eurocities_schema = schema
eurocities_problems = schema_problems

__all__ = ["ANNEX_IV_SECTIONS", "TRANSPARENCY_FORMATS", "atrs_record", "eurocities_problems", "eurocities_record",
           "eurocities_schema", "transparency_facts", "write_transparency", "ATRS_VERSION", "EUROCITIES_VERSION",
           "FORMATS", "Facts", "Written", "annex_iv", "annex_iv_html", "annex_iv_markdown", "atrs", "atrs_markdown",
           "eurocities", "gather", "schema", "schema_problems", "write_records"]
