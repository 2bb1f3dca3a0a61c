"""People's reviews of served answers (monitoring.review, `civicml review`): audited on the model, kept beside
the answer as its label (live quality counts it), counted per version and district; an unknown id writes
nothing; the reviewer role may review and the service role may not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main

pytest_plugins = ["reviewed_model"]


def _other(label: str) -> str:
    return "water" if label != "water" else "roads"


def _written(settings, name):
    """What a review could have written: the model's trail, and the store's reviews and outcomes."""
    from monitoring import existing_store
    from registry import audit

    store = existing_store(settings)
    records = store.read(model=name)
    return (len(audit(name, settings=settings)), len(store.read_reviews()),
            int(records["outcome"].notna().sum()))


def test_a_review_reaches_the_audit_trail_and_the_live_figures(reviewed_model):
    from monitoring import (add_feedback, existing_store, labelled_answers, live_quality, review_answer,
                            review_counts)
    from registry import audit

    settings, name = reviewed_model.settings, reviewed_model.name
    answer_id, said = reviewed_model.answer_ids[0], reviewed_model.labels[0]
    decision = _other(said)
    done = review_answer(answer_id.upper(), decision, "  the caller (555-867-5309) reported a burst main ",
                         settings=settings)
    assert done.changed and done.answer == said and done.decision == decision and done.group == "Northside"
    assert done.reason == "the caller ([PHONE]) reported a burst main"  # masked before it is kept anywhere
    last = audit(name, settings=settings)[-1]
    assert last["action"] == "review" and last["answer_id"] == answer_id and last["who"] == "tester"
    assert (last["version"], last["group"], last["answer"], last["decision"]) == ("1", "Northside", said, decision)
    assert "555" not in json.dumps(last)

    store = existing_store(settings)
    labelled = labelled_answers(store, name).set_index("answer_id")
    assert labelled.loc[answer_id, "outcome"] == decision and labelled.loc[answer_id, "label_source"] == "review"
    # live quality counts it as a label: the only labelled answer in Northside, and it was wrong
    figures = live_quality(store.read(model=name), window="7d", by=("version", "group"))
    real = figures[(figures["group"] == "Northside") & (figures["metric"] == "accuracy") & ~figures["estimate"]]
    assert len(real) == 1 and real["value"].iloc[0] == 0.0 and real["n"].iloc[0] >= 1

    confirmed = review_answer(reviewed_model.answer_ids[1], reviewed_model.labels[1], "checked: right",
                              settings=settings)
    assert not confirmed.changed
    counts = review_counts(store, model=name).set_index(["version", "group"])
    assert counts.loc[("1", "Northside"), "changed"] >= 1
    assert counts.loc[("1", "Riverside"), "confirmed"] >= 1
    # a late label arriving after the review does not overwrite it
    late = add_feedback(store, [(answer_id, said)])
    assert late.conflicting_ids == (answer_id,)
    assert existing_store(settings).read_answers([answer_id])["outcome"].iloc[0] == decision


def test_an_unknown_answer_id_is_one_line_and_writes_nothing(reviewed_model, capsys, tmp_path):
    settings, name = reviewed_model.settings, reviewed_model.name
    before = _written(settings, name)
    home = str(reviewed_model.home)
    errors = []
    for args in (["f" * 32, "--decision", "roads", "--reason", "wrong"],
                 [reviewed_model.answer_ids[2], "--decision", "roads", "--reason", "wrong", "--model", "other"],
                 [reviewed_model.answer_ids[2], "--decision", " ", "--reason", "wrong"],
                 ["not-an-id", "--decision", "roads", "--reason", "wrong"]):
        assert main(["review", *args, "--home", home]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("civicml: error: "), err
        errors.append(err)
    assert "no recorded answer has the id ffff" in errors[0] and "given by model 'public-router', not 'other'" \
        in errors[1] and "--decision is empty" in errors[2] and "32 hex characters" in errors[3]
    assert _written(settings, name) == before
    empty = tmp_path / "empty-home"  # a home without records: refused, and no store is created
    assert main(["review", "a" * 32, "--decision", "roads", "--reason", "wrong", "--home", str(empty)]) == 2
    assert "no recorded answer has the id aaaa" in capsys.readouterr().err
    assert not (empty / "monitoring").exists()


def test_the_reviewer_role_may_review_and_the_service_role_may_not(reviewed_model, tmp_path):
    from civicml.access import new_token
    from civicml.errors import PermissionDenied
    from monitoring import review_answer
    from registry import audit

    settings, name = reviewed_model.settings, reviewed_model.name
    tokens = {who: new_token() for who in ("rita", "router")}
    access = tmp_path / "access.yaml"
    access.write_text(json.dumps({"principals": {
        "rita": {"roles": ["reviewer"], "token_sha256": tokens["rita"][1]},
        "router": {"roles": ["service"], "token_sha256": tokens["router"][1]}}}))
    answer_id = reviewed_model.answer_ids[3]
    service = settings.with_(access_file=access, token=tokens["router"][0])
    before = _written(settings, name)
    with pytest.raises(PermissionDenied, match="service may not review"):
        review_answer(answer_id, "water", "no", settings=service)
    denied = audit(name, settings=settings)[-1]
    assert denied["action"] == "denied" and denied["attempted"] == "review" and denied["who"] == "router"
    after = _written(settings, name)
    assert after[1:] == before[1:]  # only the refusal was audited: no review, no label
    done = review_answer(answer_id, "water", "seen on site", settings=settings.with_(access_file=access,
                                                                              token=tokens["rita"][0]))
    assert done.who == "rita" and done.roles == ("reviewer",)
    assert audit(name, settings=settings)[-1]["who"] == "rita"


def test_cli_review_in_a_fresh_process_from_an_empty_folder(reviewed_model, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CIVICML_"))}
    env["HOME"] = str(tmp_path / "fresh-home")
    answer_id = reviewed_model.answer_ids[4]
    civicml = Path(sys.executable).with_name("civicml")
    done = subprocess.run([str(civicml), "review", answer_id, "--decision", "parks", "--reason", "a park bench",
                           "--model", reviewed_model.name, "--home", str(reviewed_model.home), "--json"],
                          cwd=work, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    shown = json.loads(done.stdout)
    assert shown["answer_id"] == answer_id and shown["decision"] == "parks" and shown["audit_key"]
    assert shown["version"] == "1" and shown["group"] == reviewed_model.rows[4]["district"]
    assert list(work.iterdir()) == []
