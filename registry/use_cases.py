"""Which use case a registered model belongs to, and what that says about it (its task, its unseen phrasings).

Use cases are found by the name a version records (``civicml.use_case``); nothing here names one.
``projects`` is imported when a use case is first asked for, never when this module loads: serving
imports the registry and must not load training code.
"""

from __future__ import annotations

import inspect
import tempfile
from pathlib import Path
from typing import Any

from civicml.errors import InvalidInput
from civicml.tags import TAG_TASK, TAG_USE_CASE
from registry.store import ModelStore


def use_case_named(name: str | None):
    """The use case a version records, or None (imported lazily: serving imports the registry)."""
    if not name:
        return None
    from projects import get_use_case  # noqa: PLC0415 - see above

    return get_use_case(name)


def use_case_of(store: ModelStore, name: str):
    """The use case of ``name``'s newest version that records one."""
    for version in reversed(store.versions(name)):
        if version.tags.get(TAG_USE_CASE):
            return use_case_named(version.tags[TAG_USE_CASE])
    return None


def task_of(tags: dict[str, str], metadata: dict[str, Any] | None = None) -> str:
    """classification or regression: the model's metadata, its tags, then its use case."""
    task = (metadata or {}).get("task") or tags.get(TAG_TASK)
    if task:
        return task
    try:
        use_case = use_case_named(tags.get(TAG_USE_CASE))
    except Exception:  # noqa: BLE001 - an unknown use case reads as the common case
        use_case = None
    return getattr(use_case, "task", None) or "classification"


def unseen_phrasings_holdout(use_case_name: str | None, spec) -> tuple[Any, str, str]:
    """The policy's second held-out set (``unseen_phrasings``, a :class:`registry.policy.UnseenSpec`):
    ``spec.rows`` requests generated with ``spec.seed`` from the use case's pool of phrasings that no
    training set holds (its ``generate_sources(..., phrasings="unseen")``). (frame, target, label).
    Regenerated for each promotion: the generator is seeded, so the rows are the same every time."""
    use_case = use_case_named(use_case_name)
    if use_case is None:
        raise InvalidInput("the candidate records no use case: its unseen phrasings cannot be generated")
    if "phrasings" not in inspect.signature(use_case.generate_sources).parameters:
        raise InvalidInput(f"use case '{use_case.name}' has no pool of unseen phrasings; remove the policy's "
                           f"'unseen_phrasings' field")
    with tempfile.TemporaryDirectory(prefix="civicml-unseen-") as folder:
        dataset = use_case.integrate(use_case.generate_sources(Path(folder), n=spec.rows, seed=spec.seed,
                                                               phrasings="unseen"))
        frame = dataset.frame.copy()
    return frame, dataset.target, spec.label
