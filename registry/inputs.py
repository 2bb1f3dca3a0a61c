"""What a promotion is judged by: the policy that governs a registered model, and the held-out set it names.

The governing policy is versioned with the model: registration records the bytes of
the project's policy file (the use case's ``policy.yaml``, when it governs this
model's name) as registered-model tags ``civicml.policy`` / ``civicml.policy.sha256``;
promotion reads it back from the registry. A model with no recorded policy falls
back to the project's file, then to the built-in minimum (:class:`PromotionPolicy`).
Any other policy is an *override*: it needs the ``override_policy`` action, is shown
in the gate report and written to the audit trail (:mod:`registry.lifecycle`).

:func:`held_out` is the one place that decides which policy and which held-out set
a model is judged by: promotion (:func:`promotion_inputs`, what ``civicml promote``,
the console, the demo and notebooks call), registration's rules and charts
(:func:`registry.rules.registration_holdout`) and compression's side-by-side
measurements (:mod:`registry.variants`) all call it, so all of them use the
*governing* policy and the held-out set it names. Use cases are found by the name a
version records (:mod:`registry.use_cases`); nothing here names one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from civicml.errors import IntegrityError, InvalidInput, NotFound
from civicml.settings import Settings
from civicml.tags import TAG_POLICY, TAG_POLICY_SHA256, TAG_POLICY_SOURCE
from registry.guard import authorize
from registry.policy import PromotionPolicy
from registry.store import ModelStore
from registry.use_cases import use_case_of

POLICY_MAX_CHARS = 4900  # a registered-model tag on SQL stores holds 5000


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
    """The policy recorded with ``name`` at registration; None if none is (or nothing is registered as ``name``)."""
    try:
        tags = store.model_tags(name)
    except NotFound:
        return None
    text = tags.get(TAG_POLICY)
    if text is None:
        return None
    raw = text.encode()
    if hashlib.sha256(raw).hexdigest() != tags.get(TAG_POLICY_SHA256):
        raise IntegrityError(f"the policy recorded with model '{name}' does not match its recorded SHA-256")
    return PromotionPolicy.from_bytes(raw, tags.get(TAG_POLICY_SOURCE) or f"registry:{name}")


def governing(store: ModelStore, name: str, use_case=None) -> PromotionPolicy:
    """The policy that governs ``name``: recorded with the model, else the project's (``use_case``'s, by default
    the one ``name``'s versions record), else the built-in one."""
    policy = recorded_policy(store, name)
    if policy is not None:
        return policy
    found = project_policy_bytes(use_case if use_case is not None else use_case_of(store, name), name)
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
    store.set_model_tag(name, TAG_POLICY_SHA256, new.sha256)
    store.set_model_tag(name, TAG_POLICY_SOURCE, path)
    return {"source": path, "sha256": new.sha256, "version": new.version,
            "replaces": None if old is None else {"sha256": old.sha256, "version": old.version}}


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


@dataclass(frozen=True)
class HeldOut:
    """What a model is judged by: the governing policy (or an override) and the held-out set it names."""

    policy: PromotionPolicy
    dataset: Any  # projects.Dataset: .frame, .target, .fingerprint
    label: str

    def promotion_inputs(self) -> PromotionInputs:
        return PromotionInputs(self.policy, self.dataset.frame, self.dataset.target, self.label)


def choose_held_out(store: ModelStore, name: str, settings: Settings, use_case, files: list | None = None,
                    policy: PromotionPolicy | None = None) -> HeldOut:
    """THE rule (no access check: see :func:`held_out`). The policy is ``policy`` if given (an override),
    else ``name``'s governing one (:func:`governing`; for a name not registered yet, ``use_case``'s file if
    it governs ``name``, else the built-in policy). The held-out set is ``files`` (read by ``use_case``), else
    the one the policy names (regenerated from its seed), else the use case's own held-out set."""
    policy = policy if policy is not None else governing(store, name, use_case)
    folder = settings.ensure_home() / "data" / str(use_case.name)
    if files:
        from projects import load_dataset  # noqa: PLC0415 - lazily: serving imports the registry

        return HeldOut(policy, load_dataset(use_case, [str(f) for f in files]), "files:" + ",".join(map(str, files)))
    if policy.holdout is not None:
        spec = policy.holdout
        return HeldOut(policy, use_case.holdout(folder / spec.label, seed=spec.seed, n=spec.rows), spec.label)
    return HeldOut(policy, use_case.holdout(folder / "holdout"), f"{use_case.name}-holdout")


def held_out(name: str, settings: Settings | None = None, *, use_case=None, files: list | None = None,
             policy_file: str | Path | None = None) -> HeldOut:
    """The policy and held-out set that judge model ``name`` (:func:`choose_held_out`), for a caller who may
    read it. ``use_case``: by default the one ``name``'s newest version records (give it for a model not
    registered yet). ``policy_file``: another policy than the governing one (an override:
    :func:`registry.promote` then asks for ``override_policy``)."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    authorize(settings, "read", name, store)  # a refusal is audited on the model
    use_case = use_case if use_case is not None else use_case_of(store, name)
    if use_case is None:
        raise NotFound(f"model '{name}' records no use case; pass a held-out frame and policy to promote()")
    policy = PromotionPolicy.from_yaml(policy_file) if policy_file else None
    return choose_held_out(store, name, settings, use_case, files, policy)


def promotion_inputs(name: str, settings: Settings | None = None, policy_file: str | Path | None = None,
                     holdout_files: list[str] | None = None) -> PromotionInputs:
    """The policy and held-out set a promotion of ``name`` uses (:func:`held_out`), as :func:`registry.promote`
    takes them: ``promote(name, **promotion_inputs(name).as_kwargs())``."""
    return held_out(name, settings, files=holdout_files, policy_file=policy_file).promotion_inputs()


def governing_policy(name: str, settings: Settings | None = None) -> PromotionPolicy:
    """The policy that governs registered model ``name`` (see the module's docstring)."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    authorize(settings, "read", name, store)  # a refusal is audited on the model
    return governing(store, name)


__all__ = ["HeldOut", "PromotionInputs", "choose_held_out", "governing", "governing_policy", "held_out",
           "promotion_inputs", "record_project_policy", "recorded_policy"]
