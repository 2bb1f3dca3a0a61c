"""The console in a real browser: headless Chromium from the system packages, driven by Playwright.

Opens every page, submits the try-it form, and checks that the answer, the explanation and the map
are on the page, with no console error. A failing test leaves a screenshot (its path is printed);
with ``CIVICML_SCREENSHOTS=<folder>`` every test leaves one there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

import pytest


pytest_plugins = ["explained_model"]  # one session fixture for every module that uses it
NAME = "explained-router"  # the model that fixture registers
ROW = {"description": "Huge pothole on Oak Avenue damaged my tire", "district": "Midtown", "channel": "app",
       "hour": 8, "weekday": 1}

CHROMIUM = os.environ.get("CIVICML_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _need_browser():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (pip install playwright; never `playwright install`)"
    else:
        if Path(CHROMIUM).exists() or shutil.which(CHROMIUM):
            return
        reason = f"no Chromium at {CHROMIUM} (apt-get install -y chromium: `make setup` does it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def _console(settings):
    import uvicorn

    from app.console import create_console
    from serving import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_console(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the console did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def console_url(explained_model):
    with _console(explained_model.settings) as url:
        yield url


@pytest.fixture(scope="module")
def other_use_cases(tmp_path_factory):
    """The other use cases in one home: traffic flow (a Paddle regression on numbers, registered with its
    held-out sensors), a department's use-case file (a tree on categories, text and dates) and street scenes
    (a small CNN on pictures). Yields (console URL, {model: a row, or the picture to upload})."""
    import yaml

    from civicml.settings import Settings
    from projects import get_use_case, train
    from registry import register
    from tabular_exports import INSPECTIONS_YAML, inspections

    root = tmp_path_factory.mktemp("use-cases")
    settings = Settings.from_env(env={}, home=root / "home", user="tester")
    rows = {}
    flow = get_use_case("traffic_flow")
    data = flow.integrate(flow.generate_sources(root / "flow", n=6000, seed=1))
    held = flow.holdout(root / "flow-holdout", n=3000)
    register(train(flow, data, "mlp", {"epochs": 2}, settings=settings).model_uri, "flow", settings=settings,
             holdout=held.frame, target=held.target)
    from test_console import raw_flow_inputs

    rows["flow"] = raw_flow_inputs(held.frame[list(data.features)].iloc[10])  # as a person knows them
    inspections(root / "exports", n=300, seed=2)
    spec = yaml.safe_load(INSPECTIONS_YAML.format(name="inspections", families="decision_tree"))
    for source, file in zip(spec["sources"], ("inspections.csv", "complaints.csv")):
        source["path"] = str(root / "exports" / file)
    (root / "inspections").mkdir()
    (root / "inspections" / "usecase.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    tabular = get_use_case(str(root / "inspections" / "usecase.yaml"))
    data = tabular.integrate(tabular.generate_sources(None))
    held = tabular.holdout()
    register(train(tabular, data, "decision_tree", {}, settings=settings).model_uri, "inspections",
             settings=settings, holdout=held.frame, target=held.target, tags=tabular.registry_tags)
    rows["inspections"] = held.frame[list(data.features)].iloc[0].to_dict()
    scenes = get_use_case("street_scenes")
    data = scenes.integrate(scenes.generate_sources(root / "images", n=240, seed=2))
    register(train(scenes, data, "cnn", {"epochs": 1, "width": 16}, settings=settings, seed=0).model_uri, "scenes",
             settings=settings)
    rows["scenes"] = {"image": str(next((root / "images").rglob("*.png")))}
    with _console(settings) as url:
        yield url, rows


@pytest.fixture
def page(tmp_path, request):
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        tab = browser.new_page()
        errors: list[str] = []
        tab.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
        tab.on("pageerror", lambda err: errors.append(f"page error: {err}"))
        tab.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
        tab.errors = errors
        failures_before = request.session.testsfailed
        yield tab
        failed = request.session.testsfailed > failures_before  # this test's call failed (counted before teardown)
        if failed or os.environ.get("CIVICML_SCREENSHOTS"):
            folder = Path(os.environ.get("CIVICML_SCREENSHOTS", tmp_path))
            folder.mkdir(parents=True, exist_ok=True)
            shot = folder / f"{request.node.name}.png"
            tab.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the {'failing ' if failed else ''}page: {shot}")
        browser.close()


def test_console_pages_and_try_it_in_chromium(page, console_url, explained_model, requests_holdout):
    from projects import get_use_case
    from registry import model_card
    from registry.card import read

    for path in ("/", f"/models/{NAME}", f"/models/{NAME}/versions/1"):
        response = page.goto(console_url + path)
        assert response.status == 200, path
        assert page.locator("h1").first.is_visible()
        if path == f"/models/{NAME}":  # what it does, and how good it is beside a trivial guess, as the card says
            assert page.locator("#what-it-does").inner_text() == get_use_case("service_requests").description
            card = read(model_card(NAME, "1", settings=explained_model.settings))
            quality = page.locator("#quality").inner_text()
            assert f"Right {round(100 * card['metrics']['accuracy'])} times in 100 on " in quality
            assert page.locator("#baseline").inner_text().startswith("For comparison, a trivial guess (always "
                                                                     "answering 'roads'")
            assert f"right {round(100 * card['baseline']['accuracy'])} times in 100" in quality
            assert card["limitations"][0] in page.locator("#limitations").inner_text()
            assert "No version is live yet" in page.locator("#live-version").inner_text()
    # the map: a legend naming the metric and the ends of its fixed scale; each district's figure is the model
    # card's (registry.card.evaluate per district, on every held-out row)
    legend = page.locator("svg.civic-map g.legend")
    assert legend.is_visible() and "accuracy" in legend.locator(".legend-caption").text_content()
    assert "fixed scale" in legend.get_attribute("aria-label")  # SVG text: its content, not inner_text
    assert legend.locator(".scale-worst").text_content() == "0 (worse)"
    assert legend.locator(".scale-best").text_content() == "1 (better)"
    shown = {d.get_attribute("data-name"): d.get_attribute("aria-label")
             for d in page.locator("svg.civic-map path.district").all()}
    for district, figure in _card_by_district(explained_model, requests_holdout).items():
        assert shown[district].startswith(f"{district}: accuracy {figure:.3g}"), (district, shown[district])
    # the version page: rules, charts (images really load), the map, keyboard use of the map
    assert page.locator("ol.rules li").count() >= 6
    for img in page.locator("figure img").all():
        img.scroll_into_view_if_needed()
        assert img.evaluate("i => i.decode().then(() => i.naturalWidth > 0, () => false)"), img.get_attribute("src")
    assert page.locator("svg.civic-map path.district").count() == 8
    page.locator("svg.civic-map path.district").first.focus()
    assert "accuracy" in page.locator("#district-info").inner_text()
    page.locator("#toggle-points").uncheck()
    assert not page.locator("svg.civic-map circle.point:not(.marked)").first.is_visible()

    page.goto(f"{console_url}/models/{NAME}/try")
    page.get_by_label("Description").fill(ROW["description"])
    page.get_by_label("District").select_option(ROW["district"])
    page.get_by_label("Channel").select_option(ROW["channel"])
    # hour and weekday have declared ranges (the model's categories): the form offers them as choices
    page.get_by_label("Hour of day").select_option(str(ROW["hour"]))
    page.get_by_label("Day of the week").select_option(str(ROW["weekday"]))
    page.get_by_role("button", name="Get the answer and why").click()
    page.wait_for_selector("#answer")
    assert page.locator("#answer").inner_text() == "roads"
    sure = page.locator("#confidence").inner_text()  # how sure, in words and as a share
    assert sure.split(":")[0] in ("Very sure", "Fairly sure", "Unsure") and "probability of" in sure
    assert page.locator("#sentence").inner_text().startswith("Answered 'roads' (")
    assert page.locator("#contributions tbody tr").count() >= 3
    assert "pothole" in page.locator("#contributions").inner_text()
    assert page.locator("svg.civic-map path.district.highlighted").get_attribute("data-name") == "Midtown"
    assert page.errors == []


def _card_by_district(explained_model, holdout) -> dict[str, float]:
    from registry import ModelStore
    from registry.card import evaluate
    from registry.gates import PromotionContext, predicted_labels

    store = ModelStore(explained_model.settings)
    local = store.fetch(NAME, store.get_version(NAME, "1"))
    frame = holdout.frame.reset_index(drop=True)
    ctx = PromotionContext("", local, None, frame, "department")
    answers = predicted_labels(ctx.model(local).predict(ctx.as_input(local, ctx.features(local))))
    table = evaluate(frame["department"], answers, frame, "classification", "", report_by=("district",))
    return table.per_group["district"]["accuracy"].to_dict()


def test_no_release_buttons_for_a_service_token_in_chromium(page, explained_model, tmp_path):
    import json

    from civicml.access import new_token
    from civicml.settings import Settings

    token, digest = new_token()
    access = tmp_path / "access.yaml"
    access.write_text(json.dumps({"principals": {"router": {"roles": ["service"], "token_sha256": digest}}}))
    team = Settings.from_env(env={"CIVICML_ACCESS_FILE": str(access), "CIVICML_TOKEN": token},
                             home=explained_model.home, user="tester")
    with _console(team) as url:
        page.goto(f"{url}/models/{NAME}")
        assert "router (service)" in page.locator("#who").inner_text()
        assert page.locator("#what-it-does").is_visible()  # a reader sees everything else
        assert page.get_by_role("button", name="Promote").count() == 0
        assert page.get_by_role("button", name="Roll back").count() == 0
        assert page.locator("#actions-h").count() == 0
    assert page.errors == []


def test_a_bad_form_says_what_is_wrong_in_chromium(page, console_url):
    page.goto(f"{console_url}/models/{NAME}/try")
    page.get_by_label("Description").fill("   ")  # only spaces: the browser accepts it, the model does not
    page.get_by_label("Hour of day").select_option("8")
    page.get_by_label("Day of the week").select_option("1")
    page.get_by_role("button", name="Get the answer and why").click()
    page.wait_for_selector("#error")
    assert "description" in page.locator("#error").inner_text()
    assert [e for e in page.errors if "400" not in e] == []  # the 400 of the form post itself is expected


@pytest.mark.slow
def test_try_it_for_traffic_flow_a_use_case_file_and_street_scenes_in_chromium(page, other_use_cases):
    from projects.street_scenes.generator import CLASSES

    url, rows = other_use_cases
    for name, row in rows.items():
        page.goto(f"{url}/models/{name}/try")
        if page.locator("#more-inputs").count():
            page.locator("#more-inputs summary").click()
        for column, value in row.items():
            field = page.locator(f"#f-{column}")
            kind = field.evaluate("f => f.tagName + ':' + f.type")
            if kind.startswith("SELECT"):
                field.select_option(str(value))
            elif kind == "INPUT:file":
                field.set_input_files(value)
            else:
                field.fill(str(value))
        page.get_by_role("button", name="Get the answer and why").click()
        page.wait_for_selector("#answer")
        answer = page.locator("#answer").inner_text()
        expected = {"flow": lambda a: a.endswith(" vehicles") and float(a.split()[0].replace(",", "")) >= 0,
                    "inspections": lambda a: a in ("yes", "no"), "scenes": lambda a: a in CLASSES}[name]
        assert expected(answer), (name, answer)
        sure = page.locator("#confidence").inner_text()  # an interval in vehicles, or how sure in words
        assert (sure.startswith("Likely between ") and " vehicles and " in sure) if name == "flow" else \
            sure.split(":")[0] in ("Very sure", "Fairly sure", "Unsure"), (name, sure)
        assert page.locator("#sentence").inner_text() and page.locator("#contributions tbody tr").count() >= 3
    assert page.locator("#picture").evaluate("i => i.naturalWidth") == 32  # the last: the picture the model saw
    # the flow model's sensors are sites on the city's districts
    page.goto(f"{url}/models/flow/versions/1")
    sites = page.locator("svg.civic-map path.place")
    assert sites.count() == 5 and page.locator("svg.civic-map path.district").count() == 8
    sites.first.focus()
    assert "mae" in page.locator("#district-info").inner_text() and "held-out rows" in page.locator(
        "#district-info").inner_text()
    page.goto(f"{url}/endpoints")
    assert "No endpoint is watched" in page.locator("main").inner_text()
    assert page.errors == []
