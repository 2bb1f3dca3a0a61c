"""The console's public page (app/console/public.py) in headless Chromium, without a token: the live model, what
it does, its figures per district, when it changed, people's reviews counted per version, and nothing private
(no token, no principal's name, no reasons people wrote, no recorded inputs or training rows, no home paths)."""

from __future__ import annotations

import json

import httpx

import pytest
import yaml

from test_console_browser import _console, page  # noqa: F401 - the console server and the Chromium page fixture

pytest_plugins = ["reviewed_model"]


def test_the_public_page_in_chromium_shows_the_live_model_and_nothing_private(page, reviewed_model,  # noqa: F811
                                                                              small_requests, tmp_path):
    from civicml.access import new_token
    from monitoring import review_answer
    from projects import get_use_case
    from registry import eurocities_problems

    settings, name = reviewed_model.settings, reviewed_model.name
    reason = "resident phoned back: it is a burst main"
    said = reviewed_model.labels[5]
    review_answer(reviewed_model.answer_ids[5], "water" if said != "water" else "roads", reason, settings=settings)
    token, digest = new_token()  # the console's own (service) token: it reads with it; visitors bring none
    access = tmp_path / "access.yaml"
    access.write_text(json.dumps({"principals": {"kiosk-reader": {"roles": ["service"], "token_sha256": digest}}}))
    team = settings.with_(access_file=access, token=token)
    with _console(team) as url:
        listed = page.goto(f"{url}/public")
        assert listed.status == 200
        row = page.locator("#live-models tbody tr", has_text=name)
        assert "version 1" in row.inner_text() and "changed" in row.inner_text()
        index_html = page.content()
        page.locator(f"#live-models a:text-is('{name}')").click()
        page.wait_for_selector("#record")
        assert page.locator("h1").inner_text() == name
        assert page.locator("#what-it-does").inner_text() == get_use_case("service_requests").description
        assert "Right " in page.locator("#record").inner_text()
        districts = page.locator("#by-district tbody tr")
        assert districts.count() >= 4 and "Midtown" in page.locator("#by-district").inner_text()
        assert "promoted (the first live version)" in page.locator("#history").inner_text()
        reviewed = page.locator("#reviews-by-version tbody tr").first.inner_text().split()
        assert reviewed[0] == "1" and int(reviewed[1]) >= 1 and int(reviewed[2]) >= 1
        model_html = page.content()
        record = httpx.get(url + page.locator("#record-json").get_attribute("href").removeprefix(url), timeout=60)
        assert record.status_code == 200 and record.json()["name"]
        assert "version 1" in record.text  # the record says which version it describes
        assert not [p for p in eurocities_problems(record.json()) if "missing" not in p]  # people's fields aside
        assert httpx.get(f"{url}/public/models/nosuch/record.json", timeout=60).status_code == 404
        assert page.locator("input[type=password]").count() == 0  # nothing to sign in to
        missing = page.goto(f"{url}/public/models/nosuch")
        assert missing.status == 404 and "No live model called" in page.locator("#message").inner_text()
    assert page.errors == [e for e in page.errors if "404" in e]  # only the missing model's own status
    private = [token, digest, "tester", "kiosk-reader", str(reviewed_model.home), "/tmp", reason, "burst main",
               reviewed_model.rows[0]["description"]]
    training = [d for d in small_requests.frame["description"].astype(str) if len(d) > 25][:50]
    for html in (index_html, model_html, record.text):
        for secret in (*private, *training):
            assert secret not in html, secret


def test_the_objection_procedure_comes_from_transparency_yaml_beside_the_use_case(tmp_path):
    from app.console.public import objection_procedure, public_text
    from projects import get_use_case
    from tabular_exports import INSPECTIONS_YAML

    folder = tmp_path / "inspections"
    folder.mkdir()
    (folder / "usecase.yaml").write_text(INSPECTIONS_YAML.format(name="inspections", families="decision_tree"))
    use_case = get_use_case(str(folder / "usecase.yaml"))
    assert objection_procedure(use_case) == ""  # no transparency.yaml: nothing, and no error
    (folder / "transparency.yaml").write_text(yaml.safe_dump({"people": {
        "objection_procedure": "Write to the inspections office within 6 weeks, quoting the answer's reference."}}))
    assert objection_procedure(use_case).startswith("Write to the inspections office within 6 weeks")
    (folder / "transparency.yaml").write_text("objection_procedure: [unclosed")
    assert objection_procedure(use_case) == ""  # unreadable: the page without it
    shown = public_text(f"{use_case.description} (use case `{folder}/usecase.yaml`)")
    assert shown.endswith("(use case `usecase.yaml`)") and str(tmp_path) not in shown
