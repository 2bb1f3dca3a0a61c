"""What a promotion is judged by: the policy that governs a registered model, and the held-out set it names.

The governing policy is versioned with the model: registration records the bytes of
the project's policy file (the use case's ``policy.yaml``, when it governs this
model's name) as registered-model tags ``civicml.policy`` / ``civicml.policy.sha256``;
promotion reads it back from the registry. A model with no recorded policy falls
back to the project's file, then to the built-in minimum (:class:`PromotionPolicy`).
Any other policy is an *override*: it needs the ``override_policy`` action, is shown
in the gate report and written to the audit trail (:mod:`registry.lifecycle`).

:func:`promotion_inputs` is the one place that decides which policy and which
held-out set a promotion uses; the CLI, the demo and notebooks all call it.
Use cases are found by the name a version records (``civicml.use_case``); nothing
here names one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from civicml.errors import InvalidInput, NotFound
from civicml.settings import Settings
from registry.policy import PromotionPolicy
from registry.store import ModelStore

TAG_POLICY = "civicml.policy"
TAG_POLICY_SHA = "civicml.policy.sha256"
TAG_POLICY_SOURCE = "civicml.policy.source"
POLICY_MAX_CHARS = 4900  # a registered-model tag on SQL stores holds 5000


def use_case_named(name: str | None):
    """The use case a version records, or None (imported lazily: serving imports the registry)."""
    if not name:
        return None
    from projects import get_use_case  # noqa: PLC0415 - see above

    return get_use_case(name)


def use_case_of(store: ModelStore, name: str):
    """The use case of ``name``'s newest version that records one."""
    for version in reversed(store.versions(name)):
        if version.tags.get("civicml.use_case"):
            return use_case_named(version.tags["civicml.use_case"])
    return None


def project_policy_bytes(use_case, name: str) -> tuple[bytes, str] | None:
    """The use case's policy file (bytes, path) if it governs a model called ``name``."""
    path = getattr(use_case, "policy_file", None) if use_case is not None else None
    if not path or not Path(path).is_file():
        return None
    raw = Path(path).read_bytes()
    policy = PromotionPolicy.from_bytes(raw, str(path))
    if policy.model and policy.model != name:
        return None
    return raw, str(path)


def recorded_policy(store: ModelStore, name: str) -> PromotionPolicy | None:
    tags = store.model_tags(name)
    text = tags.get(TAG_POLICY)
    if text is None:
        return None
    raw = text.encode()
    if hashlib.sha256(raw).hexdigest() != tags.get(TAG_POLICY_SHA):
        from civicml.errors import IntegrityError

        raise IntegrityError(f"the policy recorded with model '{name}' does not match its recorded SHA-256")
    return PromotionPolicy.from_bytes(raw, tags.get(TAG_POLICY_SOURCE) or f"registry:{name}")


def governing(store: ModelStore, name: str) -> PromotionPolicy:
    """The policy that governs ``name``: recorded with the model, else the project's, else the built-in one."""
    policy = recorded_policy(store, name)
    if policy is not None:
        return policy
    found = project_policy_bytes(use_case_of(store, name), name)
    if found is not None:
        return PromotionPolicy.from_bytes(*found)
    return PromotionPolicy()


def record_project_policy(store: ModelStore, name: str, use_case) -> dict[str, Any] | None:
    """At registration: record the project's policy with the model when none is, or when the project's file is a
    newer revision (``version``) than the recorded one. What changed (for the audit record), or None."""
    found = project_policy_bytes(use_case, name)
    if found is None:
        return None
    raw, path = found
    new = PromotionPolicy.from_bytes(raw, path)
    old = recorded_policy(store, name)
    if old is not None and (old.sha256 == new.sha256 or (new.version or 0) <= (old.version or 0)):
        return None
    text = raw.decode()
    if len(text) > POLICY_MAX_CHARS:
        raise InvalidInput(f"policy file {path} has {len(text)} characters; the registry keeps at most "
                           f"{POLICY_MAX_CHARS}")
    store.set_model_tag(name, TAG_POLICY, text)
    store.set_model_tag(name, TAG_POLICY_SHA, new.sha256)
    store.set_model_tag(name, TAG_POLICY_SOURCE, path)
    return {"source": path, "sha256": new.sha256, "version": new.version,
            "replaces": None if old is None else {"sha256": old.sha256, "version": old.version}}


def task_of(tags: dict[str, str], metadata: dict[str, Any] | None = None) -> str:
    """classification or regression: the model's metadata, its tags, then its use case."""
    task = (metadata or {}).get("task") or tags.get("civicml.task")
    if task:
        return task
    try:
        use_case = use_case_named(tags.get("civicml.use_case"))
    except Exception:  # noqa: BLE001 - an unknown use case reads as the common case
        use_case = None
    return getattr(use_case, "task", None) or "classification"


@dataclass
class PromotionInputs:
    """What :func:`registry.promote` is given: the policy, the held-out frame and its target and name."""

    policy: PromotionPolicy
    holdout: Any  # pandas.DataFrame
    target: str
    holdout_name: str

    def as_kwargs(self) -> dict[str, Any]:
        return {"holdout": self.holdout, "target": self.target, "policy": self.policy,
                "holdout_name": self.holdout_name}


def promotion_inputs(name: str, settings: Settings | None = None, policy_file: str | Path | None = None,
                     holdout_files: list[str] | None = None) -> PromotionInputs:
    """The policy and held-out set a promotion of ``name`` uses.

    The policy is the model's governing one unless ``policy_file`` names another (an
    override: :func:`registry.promote` then asks for ``override_policy``). The held-out
    set is ``holdout_files``, else the one the policy names (regenerated from its seed),
    else the use case's own held-out set.
    """
    from registry.guard import authorize

    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    authorize(settings, "read", name, store)  # a refusal is audited on the model
    use_case = use_case_of(store, name)
    if use_case is None:
        raise NotFound(f"model '{name}' records no use case; pass a held-out frame and policy to promote()")
    policy = PromotionPolicy.from_yaml(policy_file) if policy_file else governing(store, name)
    folder = settings.ensure_home() / "data" / use_case.name
    if holdout_files:
        from projects import load_dataset  # noqa: PLC0415 - lazily, as above

        holdout, label = load_dataset(use_case, holdout_files), "files:" + ",".join(map(str, holdout_files))
    elif policy.holdout is not None:
        spec = policy.holdout
        holdout, label = use_case.holdout(folder / spec.label, seed=spec.seed, n=spec.rows), spec.label
    else:
        holdout, label = use_case.holdout(folder / "holdout"), f"{use_case.name}-holdout"
    return PromotionInputs(policy, holdout.frame, holdout.target, label)


def unseen_phrasings_holdout(use_case_name: str | None, spec) -> tuple[Any, str, str]:
    """The policy's second held-out set (``unseen_phrasings``, a :class:`registry.policy.UnseenSpec`):
    ``spec.rows`` requests generated with ``spec.seed`` from the use case's pool of phrasings that no
    training set holds (its ``generate_sources(..., phrasings="unseen")``). (frame, target, label).
    Regenerated for each promotion: the generator is seeded, so the rows are the same every time."""
    import inspect
    import tempfile

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


def governing_policy(name: str, settings: Settings | None = None) -> PromotionPolicy:
    """The policy that governs registered model ``name`` (see the module's docstring)."""
    from registry.guard import authorize

    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    authorize(settings, "read", name, store)  # a refusal is audited on the model
    return governing(store, name)
