"""Screenshots of every console page at 1400 x 1000, for the README (docs/screenshots/*.png).

    python docs/screenshots.py [--home DIR] [--rows 1500] [--trials 4] [--out docs/screenshots]

On a demo home (``civicml demo``'s run: 311 requests tuned, registered with rules, charts and the map, promoted
through the gates), plus a traffic-flow model registered beside it so that try-it shows a forecast's raw
inputs. An existing ``--home`` with models in it is used as it is. Headless Chromium from the system
(``/usr/bin/chromium``, or ``CIVICML_CHROMIUM``) driven by Playwright, as ``tests/test_console_browser.py``
does; never ``playwright install``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CIVICML_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SIZE = {"width": 1400, "height": 1000}
ROUTER = "service-requests-router"


def demo_home(home: Path, rows: int, trials: int):
    """A demo home: ``civicml demo``'s lifecycle, and a traffic-flow forecaster registered with its held-out set."""
    from app.demo import run_demo
    from civicml.settings import Settings
    from projects import get_use_case, train
    from registry import models, register

    settings = Settings.from_env(env={}, home=home, user="city-analyst")
    if models(settings=settings):
        return settings
    run_demo(settings, rows=rows, trials=trials, progress=False)
    flow = get_use_case("traffic_flow")
    data = flow.integrate(flow.generate_sources(home / "data" / "flow", n=8000, seed=1))
    held = flow.holdout(home / "data" / "flow-holdout", n=3000)
    register(train(flow, data, "mlp", {"epochs": 3}, settings=settings).model_uri, flow.registered_model,
             settings=settings, holdout=held.frame, target=held.target)
    return settings


def serve_console(settings):
    import uvicorn

    from app.console import create_console
    from serving import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_console(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def shoot(url: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=SIZE)

        def snap(name: str, at: str | None = None):
            if at:
                page.locator(at).first.scroll_into_view_if_needed()
            path = out / f"{name}.png"
            page.screenshot(path=str(path))
            shots.append(path)

        page.goto(f"{url}/")
        snap("index")
        page.goto(f"{url}/models/{ROUTER}")
        snap("model")
        page.goto(f"{url}/models/{ROUTER}")
        page.locator("#versions-h").scroll_into_view_if_needed()
        snap("model-versions-and-audit", "#gates-h")
        version = page.locator("a", has_text="Charts of v").first.get_attribute("href")
        page.goto(url + version.removeprefix(url))
        snap("version-rules")
        snap("version-map", "svg.civic-map")
        page.goto(f"{url}/models/{ROUTER}/try")
        page.locator("#f-description").fill("Huge pothole on Oak Avenue, two cars got flat tires this morning")
        page.get_by_role("button", name="Get the answer and why").click()
        page.wait_for_selector("#answer")
        snap("try-router", "#answer-h")
        flow = "traffic-flow-forecaster"
        if page.goto(f"{url}/models/{flow}/try").status == 200:
            snap("try-traffic-form")
            page.get_by_role("button", name="Get the answer and why").click()
            page.wait_for_selector("#answer")
            snap("try-traffic-answer", "#answer-h")
            page.goto(f"{url}/models/{flow}")
            snap("model-traffic")
        page.goto(f"{url}/endpoints")
        snap("endpoints")
        browser.close()
    return shots


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a CivicML home (default: a new temporary one with the demo)")
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    home = args.home or Path(tempfile.mkdtemp(prefix="civicml-shots-")) / "home"
    settings = demo_home(home, args.rows, args.trials)
    server, url = serve_console(settings)
    try:
        for path in shoot(url, args.out):
            print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    finally:
        server.should_exit = True
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
