"""The console over HTTP (in process): every page renders, the try-it form answers and explains, and
the role checks hold (a service token cannot promote through it)."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from civicml.console import COOKIE, create_console

pytest_plugins = ["explained_model"]  # one session fixture for every module that uses it
NAME = "explained-router"  # the model that fixture registers
ROW = {"description": "Huge pothole on Oak Avenue damaged my tire", "district": "Midtown", "channel": "app",
       "hour": 8, "weekday": 1}


@pytest.fixture(scope="module")
def client(explained_model):
    with TestClient(create_console(explained_model.settings)) as c:
        yield c


def test_every_page_renders(client, explained_model):
    index = client.get("/")
    assert index.status_code == 200 and NAME in index.text and "challenger → v1" in index.text
    model = client.get(f"/models/{NAME}")
    assert model.status_code == 200
    fidelity = re.search(r"<td>(0\.\d+)</td>", model.text)
    assert fidelity and float(fidelity.group(1)) >= 0.9
    assert "register" in model.text and "tester" in model.text  # the audit trail
    version = client.get(f"/models/{NAME}/versions/1")
    assert version.status_code == 200 and re.search(r"has (no )?\w+ words", version.text) and "<dt>description: " in version.text
    assert version.text.count('class="district') == 8 and 'class="point' in version.text
    for png in re.findall(r'src="([^"]+\.png)"', version.text):
        image = client.get(png)
        assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
    assert client.get("/static/console.js").status_code == 200
    assert client.get(f"/models/{NAME}/versions/1/files/secrets.txt").status_code == 404
    assert client.get("/models/no-such-model").status_code == 404


def test_try_it_answers_with_its_explanation_and_the_map(client):
    form = client.get(f"/models/{NAME}/try")
    assert form.status_code == 200
    districts = re.search(r'<select id="f-district".*?</select>', form.text, re.S).group(0)
    assert districts.count("<option") == 8 and '<label for="f-description">' in form.text
    response = client.post(f"/models/{NAME}/try", data={"ref": "challenger", **{k: str(v) for k, v in ROW.items()}})
    assert response.status_code == 200, response.text
    assert re.search(r'<output id="answer">roads</output>', response.text)
    assert "Answered &#39;roads&#39;, mostly because of" in response.text
    assert "pothole" in response.text and "version 1" in response.text
    assert 'class="district highlighted"' in response.text and 'data-name="Midtown"' in response.text
    bad = client.post(f"/models/{NAME}/try", data={"ref": "challenger", **{k: str(v) for k, v in ROW.items()},
                                                  "hour": "eight"})
    assert bad.status_code == 400 and "column &#39;hour&#39; must be numeric, got &#39;eight&#39;" in bad.text
    unknown = client.post(f"/models/{NAME}/try", data={"ref": "challenger", **{k: str(v) for k, v in ROW.items()},
                                                      "district": "Atlantis"})
    assert unknown.status_code == 400 and "unknown district" in unknown.text


def test_a_service_token_cannot_promote_and_release_buttons_follow_roles(explained_model, tmp_path):
    from civicml.access import new_token
    from civicml.settings import Settings
    from registry import audit

    rm_token, rm_digest = new_token()
    svc_token, svc_digest = new_token()
    access = tmp_path / "access.yaml"  # outside the shared home: other tests use it in single-user mode
    access.write_text(json.dumps({"principals": {"rui": {"roles": ["release_manager"], "token_sha256": rm_digest},
                                                 "router": {"roles": ["service"], "token_sha256": svc_digest}}}))
    team = Settings.from_env(env={"CIVICML_ACCESS_FILE": str(access), "CIVICML_TOKEN": svc_token},
                             home=explained_model.home, user="tester")
    before = len(audit(NAME, settings=team))
    with TestClient(create_console(team)) as c:
        page = c.get(f"/models/{NAME}")  # the console reads with its own (service) token
        assert page.status_code == 200 and "router (service)" in page.text and 'id="promote"' not in page.text
        refused = c.post(f"/models/{NAME}/promote")
        assert refused.status_code == 403 and "service may not promote" in refused.text
        c.cookies.set(COOKIE, svc_token)
        assert c.post(f"/models/{NAME}/promote").status_code == 403
        assert c.post(f"/models/{NAME}/rollback").status_code == 403
        wrong = c.post("/sign-in", data={"token": "civicml_not-a-token"}, follow_redirects=False)
        assert wrong.status_code == 403 and COOKIE not in wrong.cookies
        signed = c.post("/sign-in", data={"token": rm_token}, follow_redirects=False)
        assert signed.status_code == 303
        c.cookies.set(COOKIE, rm_token)
        page = c.get(f"/models/{NAME}")
        assert "rui (release_manager)" in page.text and 'id="rollback"' in page.text
        rollback = c.post(f"/models/{NAME}/rollback")  # allowed, but there is nothing to roll back to
        assert rollback.status_code == 404 and "has no alias &#39;champion&#39;" in rollback.text
        foreign = c.post(f"/models/{NAME}/rollback", headers={"origin": "http://evil.example"})
        assert foreign.status_code == 403
    # nothing was changed; the registry audits refusals, so the trail only gained the service's denied rollback
    added = audit(NAME, settings=team)[before:]
    assert added and all(e["action"] == "denied" for e in added)
    assert any(e["attempted"] == "rollback" and "service" in e["roles"] for e in added)


@pytest.mark.slow
def test_try_it_works_for_the_traffic_flow_use_case(settings, tmp_path):
    """A Paddle regression model on numeric columns: the form has one number field per column and the
    answer comes with the model-agnostic explanation."""
    import registry
    from projects import get_use_case, train

    use_case = get_use_case("traffic_flow")
    data = use_case.integrate(use_case.generate_sources(tmp_path / "d", n=use_case.default_size, seed=1))
    result = train(use_case, data, "mlp", {"epochs": 2}, settings=settings)
    registry.register(result.model_uri, "flow", settings=settings)
    row = data.frame[list(data.features)].iloc[200]
    with TestClient(create_console(settings)) as c:
        form = c.get("/models/flow/try")
        assert form.status_code == 200 and form.text.count('type="number"') == len(data.features)
        answer = c.post("/models/flow/try", data={"ref": "challenger", **{k: str(v) for k, v in row.items()}})
        assert answer.status_code == 200, answer.text
        assert re.search(r'<output id="answer">[0-9.]+</output>', answer.text)
        assert "Predicted " in answer.text and "method: fallback" in answer.text
