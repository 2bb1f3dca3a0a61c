"""Public records from the registry (Eurocities, ATRS, Annex IV), and promotion that waits for people where the
policy says the model is high-risk (docs/accountability.md).

One small regression (a linear model on 200 days of air quality, a use-case file in a temporary folder with
its transparency.yaml beside it) is registered once; the tests promote it, refused then passed, and write its
records.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import registry
from app.cli import main
from civicml.errors import InvalidInput
from civicml.settings import Settings
from ozone_exports import OZONE_YAML, ozone_exports

NAME = "ozone-accountable"
REQUIRED = ["lawful_basis", "responsible_owner", "dpia", "objection_procedure"]
GATE = "people's accountability fields (high risk)"
# what people write; the required four are left empty at first
PEOPLE = {
    "organisation": "City of Example", "department": "Environmental Health", "contact_email": "air@example.org",
    "area": "City of Example", "domain": "health and health care",
    "decision_making_process": "Ozone alerts: the forecast proposes an alert; the duty officer decides.",
    "goal": "Warn residents with asthma a day before ozone peaks.", "impact": "Residents receive alerts.",
    "risks": "Missed alerts on unusual days; the duty officer checks every forecast.",
    "proportionality": "Alerts are advice only; no decision about a person is made.",
    "human_intervention": "The duty officer confirms or cancels every alert.",
    "lawful_basis": "", "responsible_owner": "", "dpia": "", "objection_procedure": "",
}
FILLED = {"lawful_basis": "Public Health Act s. 4 (air-quality warnings)",
          "responsible_owner": "Head of Environmental Health", "dpia": "DPIA 2026-07: no personal data is used.",
          "objection_procedure": "Write to air@example.org; a person answers within ten working days."}


@dataclass
class Accountable:
    settings: Settings
    folder: Path  # the use-case file's folder, where transparency.yaml lives

    def write_people(self, reviewed=None, **more) -> None:
        fields = {**PEOPLE, **more, "reviewed": reviewed}
        (self.folder / "transparency.yaml").write_text(yaml.safe_dump(fields, sort_keys=False))


@pytest.fixture(scope="module")
def accountable(tmp_path_factory) -> Accountable:
    from projects import get_use_case, load_dataset, train

    root = tmp_path_factory.mktemp("accountable")
    folder = root / "uc"
    ozone_exports(folder, n=200, seed=1)
    spec = {**yaml.safe_load(OZONE_YAML), "name": NAME,
            "policy": {"accountability": {"high_risk": True, "required": REQUIRED, "max_age_days": 365}}}
    (folder / "usecase.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    settings = Settings.from_env(env={}, home=root / "home", user="tester")
    use_case = get_use_case(str(folder / "usecase.yaml"))
    result = train(use_case, load_dataset(use_case, use_case.generate_sources(None)), "linear", settings=settings)
    registry.register(result.model_uri, NAME, settings=settings, tags=use_case.registry_tags)
    made = Accountable(settings, folder)
    made.write_people()
    return made


def _promote(made: Accountable):
    inputs = registry.promotion_inputs(NAME, made.settings)
    return registry.promote(NAME, **inputs.as_kwargs(), settings=made.settings)


def _gate(outcome):
    return next(v for v in outcome.verdicts if v.gate == GATE)


@pytest.fixture(scope="module")
def live(accountable) -> Accountable:
    """The model promoted once people wrote and reviewed every required field."""
    if registry.ModelStore(accountable.settings).alias_or_none(NAME, "champion") is None:
        accountable.write_people(reviewed=dt.date.today().isoformat(), **FILLED)
        assert _promote(accountable).promoted
    return accountable


def test_a_high_risk_model_waits_for_people_and_the_refusal_is_audited(accountable):
    refused = _promote(accountable)
    assert not refused.promoted and not _gate(refused).passed
    assert all(name in _gate(refused).detail for name in REQUIRED)
    trail = registry.audit(NAME, settings=accountable.settings)
    assert trail[-1]["action"] == "refuse"
    audited = next(g for g in trail[-1]["gates"] if g["gate"] == GATE)
    assert not audited["passed"] and "dpia" in audited["detail"]
    assert trail[-1]["policy"]["accountability"]["high_risk"] is True
    assert registry.ModelStore(accountable.settings).alias_or_none(NAME, "champion") is None

    # written, but reviewed before this version was registered: still refused, and the verdict says why
    accountable.write_people(reviewed="2020-01-01", **FILLED)
    stale = _gate(_promote(accountable))
    assert not stale.passed and "people must review the fields again" in stale.detail
    assert "more than 365 days ago" in stale.detail

    accountable.write_people(reviewed=dt.date.today().isoformat(), **FILLED)
    passed = _promote(accountable)
    assert passed.promoted and _gate(passed).passed, passed.reason
    trail = registry.audit(NAME, settings=accountable.settings)
    assert [r["action"] for r in trail][-3:] == ["refuse", "refuse", "promote"]


def test_the_records_describe_the_live_version_and_the_eurocities_one_meets_its_schema(live, tmp_path):
    import jsonschema

    registry.start_rollout(NAME, "1", 10, settings=live.settings)  # a canary in force is a rollback fact
    try:
        written = registry.write_transparency(NAME, tmp_path / "records", settings=live.settings)
    finally:
        registry.stop_rollout(NAME, settings=live.settings)
    assert sorted(p.name for p in written.files) == ["annex-iv.html", "annex-iv.md", "atrs.json", "atrs.md",
                                                     "eurocities.json"]
    assert written.eurocities_problems == []
    record = json.loads((tmp_path / "records" / "eurocities.json").read_text())
    schema = registry.eurocities_schema()
    assert len(schema["properties"]) == 49
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
                                    ).validate(record)
    assert record["lawful_basis"] == FILLED["lawful_basis"] and record["risk_category"] == "high risk"
    assert f"{NAME} version 1" in record["remark"] and record["status"] == "operational"
    assert "A canary of version 1 receives 10% of requests" in record["rollback"]

    atrs = json.loads((tmp_path / "records" / "atrs.json").read_text())
    assert atrs["describes"]["version"] == "1" and set(atrs["tier_1"]) == {"name", "description", "website_url",
                                                                            "contact_email"}
    assert list(atrs["tier_2"]) == ["owner_and_responsibility", "description_and_rationale",
                                    "decision_making_process", "tool_specification",
                                    "risks_mitigations_and_impact_assessments"]
    assert atrs["tier_2"]["owner_and_responsibility"]["senior_responsible_owner"] == FILLED["responsible_owner"]
    assert "tier_2.decision_making_process.required_training" in atrs["to_be_written_by_people"]
    assert "## Tier 2" in (tmp_path / "records" / "atrs.md").read_text()

    annex = (tmp_path / "records" / "annex-iv.md").read_text()
    assert f"{NAME} version 1" in annex and all(f"## {s}" in annex for s in registry.ANNEX_IV_SECTIONS)
    assert "To be written by people* (transparency.yaml: `harmonised_standards`)" in annex
    page = (tmp_path / "records" / "annex-iv.html").read_text()
    assert page.count("<section>") == 9 and "version 1" in page


def test_what_people_must_write_is_named(accountable, tmp_path):
    assert "lawful_basis: missing (required)" in registry.eurocities_problems({"name": "x"})
    with pytest.raises(InvalidInput, match=r"unknown field 'lawfull_basis' \(did you mean 'lawful_basis'\?\)"):
        registry.PromotionPolicy.from_dict({"accountability": {"high_risk": True, "required": ["lawfull_basis"]}})
    with pytest.raises(InvalidInput, match=r"unknown field 'accountability.high_risks'"):
        registry.PromotionPolicy.from_dict({"accountability": {"high_risks": True}})
    from projects import get_use_case
    from registry.transparency_file import parse, read

    bad = tmp_path / "transparency.yaml"
    bad.write_text("objection_proceedure: write to us\n")
    with pytest.raises(InvalidInput, match="did you mean 'objection_procedure'"):
        parse(bad.read_bytes(), bad)
    for name in ("service_requests", "street_scenes", "traffic_flow"):  # written by people, required ones empty
        people = read(get_use_case(name))
        assert people.exists and not people.get("lawful_basis") and people.get("title")
    assert main(["transparency", "no-such-model", "--home", str(accountable.settings.home),
                 "--out", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()


def test_civicml_transparency_from_an_empty_folder(live, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CIVICML_"))}
    env["HOME"] = str(tmp_path / "fresh-home")
    civicml = Path(sys.executable).with_name("civicml")
    done = subprocess.run([str(civicml), "transparency", NAME, "--home", str(live.settings.home), "--format",
                           "eurocities", "--format", "annex-iv", "--out", "records", "--json"], cwd=work,
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    said = json.loads(done.stdout)
    assert said["version"] == "1" and said["eurocities_problems"] == []
    assert sorted(p.name for p in (work / "records").iterdir()) == ["annex-iv.html", "annex-iv.md",
                                                                     "eurocities.json"]
    assert sorted(p.name for p in work.iterdir()) == ["records"]
