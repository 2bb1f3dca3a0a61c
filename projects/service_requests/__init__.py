"""Use case 1: route 311 citizen service requests to the department that handles them."""

from __future__ import annotations

from pathlib import Path

from projects.base import Dataset, UseCase
from projects.service_requests.generator import DEPARTMENTS, DISTRICTS, generate_requests, write_sources
from projects.service_requests.integrate import integrate_sources
from projects.service_requests.models import SKLEARN_FAMILIES

FEATURES = ("description", "district", "channel", "hour", "weekday")


class ServiceRequests(UseCase):
    name = "service_requests"
    task = "classification"
    metric = "macro_f1"
    direction = "maximize"
    registered_model = "service-requests-router"
    description = "Route 311 citizen service requests to the department that must handle them."
    default_size = 3000
    policy_file = Path(__file__).parent / "policy.yaml"

    @property
    def families(self):
        families = dict(SKLEARN_FAMILIES)
        try:  # the pretrained-text families need Paddle; they are optional at import time
            from projects.service_requests.text_models import TEXT_FAMILIES
        except ImportError:
            TEXT_FAMILIES = {}
        families.update(TEXT_FAMILIES)
        return families

    def generate_sources(self, folder: Path, n: int, seed: int, phrasings: str = "seen") -> list[Path]:
        return write_sources(generate_requests(n, seed, phrasings), Path(folder), seed)

    def integrate(self, sources: list[Path]) -> Dataset:
        frame, report = integrate_sources([Path(p) for p in sources])
        return Dataset.build(self.name, frame, "department", FEATURES, sources, report)

    def category_values(self, dataset: Dataset) -> dict[str, list]:
        # hour and weekday: their declared ranges (0-23, 0-6), which serving checks
        return {"district": [d.name for d in DISTRICTS], "channel": sorted(dataset.frame["channel"].unique()),
                "department": list(DEPARTMENTS), "hour": list(range(24)), "weekday": list(range(7))}


__all__ = ["ServiceRequests", "FEATURES"]
