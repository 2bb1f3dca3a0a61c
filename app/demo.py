"""The main job, end to end on the embedded default: the whole lifecycle in one call.

generate sources -> integrate, clean, mask -> tune (nested MLflow runs) -> register (with rules, charts
and the district map on a fresh held-out set) -> promote through the gates -> serve on a free local port
-> route real requests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from civicml.settings import Settings
from civicml.tags import TAG_STUDY

SAMPLE_REQUESTS = [
    {"description": "Huge pothole on Oak Avenue, two cars got flat tires this morning",
     "district": "Midtown", "channel": "app", "hour": 8, "weekday": 1},
    {"description": "Nobody picked up the garbage on Cedar Lane, bins overflowing. Call me at (555) 201-3344",
     "district": "Southport", "channel": "phone", "hour": 14, "weekday": 3},
    {"description": "Loud music and shouting from the bar on Mill Street at 2am",
     "district": "Old Town", "channel": "web", "hour": 2, "weekday": 6},
    {"description": "Water main break, the street is flooding near River Road",
     "district": "Riverside", "channel": "phone", "hour": 11, "weekday": 2},
    {"description": "Elderly man sleeping outside in the cold at Station Plaza needs shelter",
     "district": "Harbor", "channel": "web", "hour": 22, "weekday": 4},
    {"description": "Tree branch fell on the playground swings in the park by Willow Way",
     "district": "Greenfield", "channel": "app", "hour": 16, "weekday": 5},
]


@dataclass
class DemoReport:
    home: str
    tracking_uri: str
    rows: int
    trials: int
    best_value: float | None
    best_params: dict
    registered_version: str | None
    promoted: bool
    champion: str | None
    routed: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def run_demo(settings: Settings | None = None, rows: int = 3000, trials: int = 8, seed: int = 7,
             say=print, progress=True) -> DemoReport:
    from projects import get_use_case, load_dataset
    from registry import held_out, promote, promotion_inputs, recorded_fidelity, register
    from serving import BackgroundServer, Endpoint, EndpointClient
    from tuning import tune

    from civicml.errors import InvalidInput

    if rows < 200:
        raise InvalidInput(f"--rows must be at least 200, got {rows}")
    if trials < 1:
        raise InvalidInput(f"--trials must be at least 1, got {trials}")
    settings = settings or Settings.from_env()
    started = time.perf_counter()
    use_case = get_use_case("service_requests")
    home = settings.ensure_home()

    say(f"[1/6] generating {rows} synthetic 311 requests (call-centre CSV + web-portal Parquet) ...")
    sources = use_case.generate_sources(home / "data" / use_case.name / f"n{rows}-seed{seed}", n=rows, seed=seed)
    dataset = load_dataset(use_case, sources)
    dropped = {k: v for k, v in dataset.report.items() if v and k.startswith(("dropped", "district"))}
    say(f"      integrated {len(dataset)} requests from {len(sources)} sources; cleaning: {dropped}")
    say("      personal data masked: names, phones and e-mails are gone from the data set")

    say(f"[2/6] tuning: {trials} trials over {', '.join(use_case.families)} ...")
    result = tune(use_case, dataset, n_trials=trials, study_name="service_requests-demo", settings=settings,
                  seed=seed, progress=progress)
    say(f"      best macro-F1 {result.best_value:.4f} from trial {result.best_trial}: {result.best_params}")

    say(f"[3/6] registering the best model as '{use_case.registered_model}' @challenger, with rules, charts "
        f"and the district map on a fresh held-out set ...")
    holdout = held_out(use_case.registered_model, settings, use_case=use_case).dataset
    version = register(result.best_model_uri, use_case.registered_model, settings=settings,
                       tags={TAG_STUDY: result.study_name}, holdout=holdout.frame, target=holdout.target)
    say(f"      version {version.version}, sha256 {version.sha256[:12]}...")
    fidelity = recorded_fidelity(use_case.registered_model, version.version, settings)
    if fidelity:
        say(f"      rules fidelity {fidelity} on {len(holdout)} held-out requests; charts and map logged "
            f"(see them with `civicml console`)")

    say("[4/6] promoting through the gates, re-evaluated on the same held-out set ...")
    inputs = promotion_inputs(use_case.registered_model, settings)  # the governing policy, as `civicml promote`
    outcome = promote(use_case.registered_model, **inputs.as_kwargs(), settings=settings)
    for v in outcome.verdicts:
        say(f"      {'PASS' if v.passed else 'FAIL'} {v.gate}: {v.detail}")
    if outcome.promoted or outcome.previous:
        say(f"      {'promoted' if outcome.promoted else 'refused'}: champion is version "
            f"{outcome.candidate if outcome.promoted else outcome.previous}")
    else:
        say(f"      refused: no champion yet; version {version.version} is tried below as @challenger")

    # A refusal (say, the latency gate on a busy machine) still lets the user try the model: as @challenger.
    alias = "champion" if outcome.promoted or outcome.previous else "challenger"
    say("[5/6] serving models:/%s@%s on a free local port ..." % (use_case.registered_model, alias))
    routed = []
    endpoint = Endpoint(use_case.registered_model, alias=alias, settings=settings)
    with BackgroundServer(endpoint) as server:
        say(f"      listening on {server.url}")
        with EndpointClient(server.url) as client:
            answer = client.predict(SAMPLE_REQUESTS)
        say("[6/6] routed requests:")
        for request, prediction in zip(SAMPLE_REQUESTS, answer["predictions"]):
            department = prediction["label"] if isinstance(prediction, dict) else prediction
            routed.append({"description": request["description"], "department": department,
                           "version": answer["model"]["version"]})
            say(f"      -> {department:<16} v{answer['model']['version']}  {request['description'][:70]}")
    report = DemoReport(str(home), settings.tracking_uri, len(dataset), result.n_complete + result.n_pruned,
                        result.best_value, result.best_params, version.version, outcome.promoted,
                        outcome.candidate if outcome.promoted else outcome.previous, routed,
                        time.perf_counter() - started)
    say(f"done in {report.seconds:.0f} s. Browse the runs: mlflow ui --backend-store-uri {settings.tracking_uri}")
    return report
