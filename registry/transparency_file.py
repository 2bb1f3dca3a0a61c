"""What only people can say about a use case: its ``transparency.yaml``, and whether it is fit to promote under.

Public records (:mod:`registry.transparency`) are filled from what the registry knows; the rest (the lawful
basis, who answers for the model, the data-protection impact assessment, how people object, whom to
contact, ...) is written by people in a ``transparency.yaml`` beside the use case:

* a use-case file (``usecase.yaml``): ``transparency.yaml`` in the same folder;
* a built-in or plugin use case: ``transparency.yaml`` in the folder of the module that defines it
  (``projects/service_requests/transparency.yaml``).

::

    reviewed: 2026-12-01          # when people last checked every field against the model in force
    reviewed_by: Dana Whitfield, records officer
    lawful_basis: Municipal Services Act s. 12 (handling of service requests)
    responsible_owner: Director of Public Works
    dpia: DPIA 2026-14 ...
    objection_procedure: ...

Every field (:data:`HUMAN_FIELDS`) is optional to the file; an empty one is left out of the records and
named as "to be written by people". A field CivicML does not know is an error that names it, with "did
you mean".

A policy's ``accountability:`` section (:class:`registry.policy.AccountabilitySpec`) makes some fields
required for promotion: :func:`accountability_problems` says what stops it (an empty required field, no
``reviewed:`` date, a review older than the last material change or than ``max_age_days``).
"""

from __future__ import annotations

import datetime as dt
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from civicml.errors import InvalidInput, did_you_mean

FILE_NAME = "transparency.yaml"

# field -> what people write there (the records that use it: E Eurocities, A ATRS, IV Annex IV)
HUMAN_FIELDS: dict[str, str] = {
    "title": "the name people know the tool by (E name, A name; default: the registered model's name)",
    "description_short": "one line of at most 150 characters (E; default: the use case's description)",
    "organisation": "the organisation responsible for its use (E organization, A 2.1.1, IV provider)",
    "department": "the department or team using it (E department, A 2.1.2)",
    "responsible_owner": "the senior responsible owner: name and role (A 2.1.3, IV 1)",
    "contact_email": "a team e-mail address for questions about the record (E, A 1.4)",
    "contact_name": "a contact's name (E)",
    "contact_phone": "a contact telephone number (E)",
    "area": "the geographical area it serves (E area, A region)",
    "domain": "the policy domain, one of the Eurocities list (E domain)",
    "website": "a public page about it, https://... (E website, A 1.3)",
    "status": "planned, design, development, pilot, evaluation, operational or retired (E; default: "
              "operational for the champion)",
    "remark": "anything else the public should know (E remark)",
    "lawful_basis": "the law that allows this processing (E lawful_basis, IV 1)",
    "decision_making_process": "the formal process it takes part in (E, A 2.3.1 process integration)",
    "goal": "what it is for and how it helps reach that goal (E goal, A 2.2.3 benefit)",
    "impact": "how people meet its effects and what they may be (E impact)",
    "risks": "the risk assessment used, the risks and their mitigations (E risks, A 2.5.2, IV 3)",
    "risk_category": "minimal risk, limited risk, high risk or unacceptable (E; default: high risk when the "
                     "policy says so)",
    "proportionality": "why its use is necessary and its benefits outweigh possible harm (E)",
    "documentation": "a URL with more about this use (E documentation)",
    "dpia": "the data-protection impact assessment: which, when, key findings (E DPIA_description, A 2.5.1)",
    "dpia_url": "the full DPIA, https://... (E DPIA_url)",
    "impact_assessment": "the algorithm or fundamental-rights impact assessment and its findings (E "
                         "AIA_description, A 2.5.1)",
    "impact_assessment_url": "that assessment, https://... (E AIA_url)",
    "data_bias": "known bias in the data and how it is compensated (E data_bias; CivicML adds per-group figures)",
    "training_data": "why each source was chosen (E training_data; CivicML lists the sources)",
    "alternatives_considered": "other options and why this one (E, A 2.2.5)",
    "previous_process": "how the decision was made before (A 2.2.4)",
    "codebase_url": "where the code is published, https://... (E codebase_url)",
    "product_page": "a product page, https://... (E product_page)",
    "product_information": "central product information, https://... (E product_information)",
    "monitoring": "who watches its performance and how often (E monitoring, A 2.4.1.3; CivicML adds its gates)",
    "human_intervention": "how people check and override its answers, and who may (E, A 2.3.4, IV 2 and 3)",
    "objection_procedure": "how people object to its use or an answer (E objection_procedure, A 2.3.6)",
    "required_training": "the training its users get (A 2.3.5)",
    "frequency_and_scale": "how often it is used and on how many cases (A 2.3.3)",
    "external_supplier": "suppliers involved, their role and data access; 'none' if none (A 2.1.4)",
    "data_collection": "why and how the data was first collected (A 2.4.3.8)",
    "data_sharing_agreements": "data-sharing agreements in place (A 2.4.3.10)",
    "data_access_and_storage": "who may access the data, for how long it is kept, who keeps it (A 2.4.3.11)",
    "source_data_url": "openly published data, https://... (A 2.4.3.7)",
    "metrics_rationale": "why the policy's metric and floors suit this use (IV 4)",
    "risk_management": "the risk-management system of Article 9 (IV 5)",
    "harmonised_standards": "harmonised standards applied, or the solutions adopted instead (IV 7)",
    "declaration_of_conformity": "the EU declaration of conformity, or where it is kept (IV 8)",
    "post_market_monitoring": "the post-market monitoring plan (IV 9; CivicML adds its canary and rollback facts)",
    "instructions_for_use": "what deployers are told about using its answers (IV 1)",
    "revision_note": "why and when the record is revised next (E revision_note)",
    "revision_date": "the date before which the record must be revised, YYYY-MM-DD (E; default: reviewed + "
                     "max_age_days, else a year after the last change)",
    "publication_date": "when the record was first published, YYYY-MM-DD (E; default: the first promotion)",
    "keywords": "words that help people find the record (E)",
    "lang": "the record's language, ISO 639-1 (E; default en)",
}
# fields CivicML fills itself when people leave them empty (their defaults: HUMAN_FIELDS)
DEFAULTED = ("title", "description_short", "status", "remark", "risk_category", "revision_note", "revision_date",
             "publication_date", "keywords", "lang")
ABOUT_REVIEW = ("reviewed", "reviewed_by")  # when and by whom the fields were last checked (not record fields)


def path_for(use_case) -> Path:
    """Where ``use_case``'s transparency file is: beside its use-case file, else beside its module."""
    spec_path = getattr(getattr(use_case, "spec", None), "path", None)
    if spec_path:
        return Path(spec_path).parent / FILE_NAME
    return Path(inspect.getfile(type(use_case))).parent / FILE_NAME


@dataclass(frozen=True)
class HumanFields:
    """A transparency file as read: the filled fields, when and by whom they were reviewed."""

    path: Path
    values: Mapping[str, str] = field(default_factory=dict)  # only filled fields, stripped
    reviewed: dt.datetime | None = None  # UTC; a bare date reads as the end of that day
    reviewed_by: str = ""
    exists: bool = False

    def get(self, key: str) -> str:
        return self.values.get(key, "")

    @property
    def empty(self) -> list[str]:
        """The known fields nobody has written yet."""
        return [k for k in HUMAN_FIELDS if not self.values.get(k)]


def read(use_case) -> HumanFields:
    """``use_case``'s transparency file (:func:`path_for`); an absent file reads as every field empty."""
    path = path_for(use_case)
    if not path.is_file():
        return HumanFields(path)
    return parse(path.read_bytes(), path)


def parse(raw: bytes, path: Path) -> HumanFields:
    where = f"transparency file {path}"
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as err:
        raise InvalidInput(f"{where}: not valid YAML ({err.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{where}: expected a mapping of field names to text")
    known = list(HUMAN_FIELDS) + list(ABOUT_REVIEW)
    values: dict[str, str] = {}
    for key, value in data.items():
        if key not in known:
            raise InvalidInput(f"{where}: unknown field '{key}'{did_you_mean(str(key), known)} "
                               f"(fields: docs/accountability.md)")
        if key == "reviewed":
            continue
        text = _text(where, str(key), value)
        if text:
            values[str(key)] = text
    reviewed = _when(where, data.get("reviewed"))
    return HumanFields(path, {k: v for k, v in values.items() if k in HUMAN_FIELDS}, reviewed,
                       values.get("reviewed_by", ""), True)


def _text(where: str, key: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ", ".join(str(v).strip() for v in value if str(v).strip())
    if isinstance(value, (dict, list)):
        raise InvalidInput(f"{where}: field '{key}' must be text, got a {type(value).__name__}")
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value).strip()


def _when(where: str, value: Any) -> dt.datetime | None:
    """``reviewed:`` as a UTC time: a date counts as the end of that day (a review that day covers it)."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00")) if "T" in value \
                else dt.date.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInput(f"{where}: field 'reviewed' must be a date (YYYY-MM-DD), got {value!r}") from None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time.max, dt.timezone.utc)
    raise InvalidInput(f"{where}: field 'reviewed' must be a date (YYYY-MM-DD), got {value!r}")


def parse_time(text: str | None) -> dt.datetime | None:
    """An ISO 8601 time as the registry writes them (``registered_at``, an audit record's ``when``), or None."""
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def accountability_problems(spec, human: HumanFields, changes: Mapping[str, str | None],
                            now: dt.datetime | None = None) -> list[str]:
    """What stops a promotion under ``spec`` (:class:`registry.policy.AccountabilitySpec`): required fields
    that are empty, no review date, a review before the last material change (``changes``: what -> when, ISO
    8601) or older than ``spec.max_age_days``. [] when nothing does."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if not human.exists:
        return [f"no {FILE_NAME} at {human.path}: people must write {', '.join(spec.required)} there"]
    problems = []
    empty = [f for f in spec.required if not human.get(f)]
    if empty:
        problems.append(f"required field(s) empty in {human.path}: {', '.join(empty)}")
    if human.reviewed is None:
        problems.append(f"{human.path} has no 'reviewed:' date: people must confirm the fields after the last "
                        f"change")
        return problems
    times = {what: parse_time(when) for what, when in changes.items()}
    later = {what: when for what, when in times.items() if when is not None and when > human.reviewed}
    if later:
        what = max(later, key=later.get)
        problems.append(f"reviewed {human.reviewed.date()} is older than the {what} "
                        f"({later[what].isoformat(timespec='seconds')}): people must review the fields again")
    if spec.max_age_days is not None and now - human.reviewed > dt.timedelta(days=spec.max_age_days):
        problems.append(f"reviewed {human.reviewed.date()} is more than {spec.max_age_days} days ago "
                        f"(max_age_days)")
    return problems


__all__ = ["ABOUT_REVIEW", "DEFAULTED", "FILE_NAME", "HUMAN_FIELDS", "HumanFields", "accountability_problems", "parse",
           "parse_time", "path_for", "read"]
