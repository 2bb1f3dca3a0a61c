"""Integration, cleaning and masking of the 311 department sources."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from civicml.errors import InvalidInput, NotFound
from projects import get_use_case, load_dataset
from projects.masking import EMAIL, PHONE, Masker
from projects.service_requests.generator import DEPARTMENTS, generate_requests


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    use_case = get_use_case("service_requests")
    return use_case.generate_sources(tmp_path_factory.mktemp("src"), n=900, seed=11)


@pytest.fixture(scope="module")
def dataset(sources):
    return load_dataset("service_requests", sources)


def test_two_sources_with_different_schemas_become_one(sources, dataset):
    cc = pd.read_csv(sources[0])
    web = pd.read_parquet(sources[1])
    assert "Received" in cc.columns and "submitted_utc" in web.columns
    assert set(dataset.frame["source"]) == {"call_centre.csv", "web_portal.parquet"}
    assert set(dataset.frame["department"]) <= set(DEPARTMENTS)
    assert set(dataset.frame["channel"]) == {"phone", "web", "app"}
    assert str(dataset.frame["created_at"].dt.tz) == "UTC"
    assert dataset.frame["hour"].between(0, 23).all() and dataset.frame["weekday"].between(0, 6).all()


def test_cleaning_drops_what_it_must_and_says_so(sources, dataset):
    report = dataset.report
    for reason in ("dropped_unparseable_timestamp", "dropped_missing_description", "dropped_outside_city",
                   "dropped_cross_source_duplicate", "district_inferred_from_coordinates"):
        assert report[reason] > 0, reason
    assert report["rows_kept"] == len(dataset)
    frame = dataset.frame
    assert frame["lat"].between(40.60, 40.80).all() and frame["lon"].between(-74.05, -73.85).all()
    assert frame["description"].str.strip().ne("").all()
    # no cross-source duplicate remains: same text and district within 30 minutes
    key = frame["description"].str.lower() + "|" + frame["district"]
    ordered = frame.assign(key=key).sort_values("created_at")
    gaps = ordered.groupby("key")["created_at"].diff().dropna()
    assert (gaps > pd.Timedelta(minutes=30)).all()


def test_masked_frame_holds_no_personal_data_from_raw_sources(sources, dataset):
    cc = pd.read_csv(sources[0])
    web = pd.read_parquet(sources[1])
    names = set(cc["Caller Name"].dropna()) | set(web["reporter_name"].dropna())
    phones = set(cc["Caller Phone"].dropna()) | set(web["contact_phone"].dropna())
    emails = set(web["contact_email"].dropna())
    raw_text = pd.concat([cc["Issue Details"], web["text"]]).dropna()
    assert raw_text.str.contains("@").any() and raw_text.str.contains("My name is").any()  # there was PII to mask
    blob = "\n".join(dataset.frame.astype(str).agg(" ".join, axis=1))
    for phone in phones:
        assert phone not in blob
    for email in emails:
        assert email not in blob
    for name in names:
        assert name not in blob
        for part in name.split():
            assert re.search(rf"\b{re.escape(part)}\b", blob) is None, part
    text = "\n".join(dataset.frame["description"])
    assert not EMAIL.search(text) and not PHONE.search(text)
    assert {"reporter_name", "phone", "email"}.isdisjoint(dataset.frame.columns)
    assert dataset.frame["description"].str.contains(r"\[(?:NAME|PHONE|EMAIL)\]").any()


def test_masker_catches_introductions_of_unknown_names():
    masker = Masker(["Maria Lopez"])
    text = masker.mask("My name is Joan Baker, call 555-201-3344 or joan@x.org. Maria Lopez saw it too.")
    assert text == "My name is [NAME], call [PHONE] or [EMAIL]. [NAME] saw it too."


def test_fingerprint_is_stable_and_content_sensitive(sources, dataset):
    again = load_dataset("service_requests", sources)
    assert again.fingerprint == dataset.fingerprint
    other = get_use_case("service_requests").integrate(sources[:1])
    assert other.fingerprint != dataset.fingerprint


def test_generator_is_seeded():
    a, b = generate_requests(50, seed=5), generate_requests(50, seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert not generate_requests(50, seed=6)["description"].equals(a["description"])


def test_users_own_csv_through_a_schema_file(tmp_path):
    own = pd.DataFrame({
        "Opened": ["03/14/2026 08:15 AM", "03/14/2026 11:40 PM", "not a date"],
        "Details": ["Pothole on Main St", "Loud party, call Ann Lee at 555-111-2222", "Trash everywhere"],
        "Area": ["midtown", "Old Town", "Harbor"], "Assigned": ["Streets", "Police", "Sanitation"],
        "Y": [40.73, 40.70, 40.64], "X": [-73.93, -73.96, -74.01], "Caller": ["Bob Stone", "Ann Lee", "Cy Young"],
    })
    own.to_csv(tmp_path / "export.csv", index=False)
    (tmp_path / "export.schema.yaml").write_text(
        "format: csv\n"
        "columns: {created_at: Opened, description: Details, district: Area, department: Assigned,"
        " lat: Y, lon: X, reporter_name: Caller}\n"
        "channel: phone\n"
        "timestamp: {format: '%m/%d/%Y %I:%M %p', timezone: America/Chicago}\n"
        "department_map: {Streets: roads, Police: noise, Sanitation: sanitation}\n")
    ds = load_dataset("service_requests", [tmp_path / "export.csv"])
    assert list(ds.frame["department"]) == ["roads", "noise"]
    assert ds.report["dropped_unparseable_timestamp"] == 1
    assert ds.frame.loc[1, "description"] == "Loud party, call [NAME] at [PHONE]"
    assert ds.frame.loc[0, "district"] == "Midtown"


def test_schema_errors_name_the_field(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(NotFound, match="no schema for source 'x.csv'"):
        load_dataset("service_requests", [tmp_path / "x.csv"])
    (tmp_path / "x.schema.yaml").write_text("format: csv\ncolumns: {created_at: a, description: b}\n")
    with pytest.raises(InvalidInput, match="'columns.department' is required"):
        load_dataset("service_requests", [tmp_path / "x.csv"])
    (tmp_path / "x.schema.yaml").write_text("format: csv\ncolums: {}\n")
    with pytest.raises(InvalidInput, match="unknown field 'colums'"):
        load_dataset("service_requests", [tmp_path / "x.csv"])
    (tmp_path / "x.schema.yaml").write_text(
        "format: csv\ncolumns: {created_at: a, description: b, department: nope}\n")
    with pytest.raises(InvalidInput, match="column 'nope'"):
        load_dataset("service_requests", [tmp_path / "x.csv"])
    with pytest.raises(NotFound, match="source file not found"):
        load_dataset("service_requests", [tmp_path / "missing.csv"])


def _mask_without_pretests(masker: Masker, text: str) -> str:
    """Masker.mask as it was before its pre-tests: every pattern over every text."""
    from projects.masking import INTRODUCTION

    text = EMAIL.sub("[EMAIL]", text)
    text = PHONE.sub("[PHONE]", text)
    text = INTRODUCTION.sub(lambda m: m.group(1) + "[NAME]", text)
    return masker._names.sub("[NAME]", text) if masker._names is not None else text


def test_masker_pretests_change_no_text():
    """The cheap tests before each pattern (an @, three digits, an introduction's words) skip only texts the
    pattern cannot match: seeded texts built from the pieces each pattern looks for, and their near misses."""
    import random

    pieces = ["a.b@example.org", "x@y", "@", "555-123-4567", "(555) 123 4567", "+1 555.123.4567", "12", "123",
              "5551234567", "My name is Dana Smith", "my name is dana", "THIS IS Bob", "This is Bob", "I'm Ana",
              "I am Leo Park", "i am leo", "Contact Maria Lopez", "contact: Maria", "Ask for Sam", "Name: Jo",
              "Reported by Kim Lee", "reported by kim", "İstanbul", "pothole", "on Oak Avenue", ",", "\n", "Lopez"]
    rng = random.Random(7)
    for masker in (Masker(), Masker(["Maria Lopez"])):
        for _ in range(3000):
            text = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
            assert masker.mask(text) == _mask_without_pretests(masker, text), text


def test_masking_many_texts_at_once_is_masking_each():
    """Masker.mask_many (the recorder's batches: one scan of the texts joined) gives what mask gives each text:
    seeded texts that end or start with half an introduction or a phone (which must not meet the next text's
    other half), hold a NUL themselves, or are empty; and RecordMasking.mask_many is its mask row by row."""
    import random

    from monitoring.masking import RecordMasking

    pieces = ["a.b@example.org", "@", "555-123", "4567", "(555) 123 4567", "123", "My name is", "Dana Smith", "this is",
              "Bob", "I'm", "Ana", "contact", "Maria Lopez", "Reported by", "Kim", "İstanbul", "pothole", "\x00", "",
              "\n", " ", "Lopez", "x@y.org"]
    rng = random.Random(11)
    for masker in (Masker(), Masker(["Maria Lopez"])):
        for _ in range(300):
            texts = ["".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randint(0, 4)))
                     for _ in range(rng.randint(0, 12))]
            assert masker.mask_many(texts) == [masker.mask(t) for t in texts], texts
    masking = RecordMasking(features=("description", "district", "hour"), pii_columns=("reporter_name", "phone"),
                            group="district")
    rows = []
    for i in range(400):
        row = {"description": " ".join(rng.choice(pieces) for _ in range(3)), "district": rng.choice(["North", "Midtown"]),
               "hour": rng.choice([8, 9.5, float("nan"), None, True]), "phone": "555-201-3344"}
        if i % 7 == 0:
            row["reporter_name"] = "Dana Smith"
        if i % 11 == 0:
            del row["district"]
        rows.append(row)
    assert masking.mask_many(rows) == [masking.mask(r) for r in rows]
