"""Variants: compressed or converted copies of a registered version, built, measured, gated and registered.

The variant room, from the bottom up: the ``variants:`` section of a policy (:mod:`registry.variant_policy`),
which variant of which version serving loads (:mod:`registry.variant_lookup`), building one beside its parent
(:mod:`registry.variant_build`), and here, at the top, what ties them together: :func:`compress` builds a
variant, then registers it through :func:`registry.register` (checksum, lineage, card, audit record) and
writes the parent's card again with it. A build that fails (``cannot convert: ...``) registers nothing and
leaves no run.

Promotion (:func:`registry.promote`): the champion moves with its variants, because serving finds
them by kind on the champion's version. When the policy's ``build`` asks, promotion builds and
gates the candidate's missing variants (:func:`build_for_promotion`) after its own gates passed and
before the alias moves; a variant that is refused, or cannot be built, never blocks the promotion
(the gate report says why) and is never served.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from civicml.access import require
from civicml.errors import CivicMLError
from civicml.settings import Settings
from civicml.tags import TAG_VARIANT, TAG_VARIANT_GATE
from registry.registration import register, rewrite_card_variants
from registry.store import ModelStore
from registry.variant_build import CompressOptions, VariantOutcome, build_variant, kinds
from registry.variant_lookup import variants_in
from registry.variant_policy import VariantPolicy

log = logging.getLogger("civicml.registry")


def compress(name: str, version: str, kind: str, settings: Settings | None = None,
             options: CompressOptions | None = None, **fields) -> VariantOutcome:
    """Build the ``kind`` variant of ``name`` ``version``, measure it beside its parent, gate it
    (:func:`registry.variant_build.build_variant`), then register it (a refused one too, unless
    ``register_refused`` is false). ``options``, or its fields as keywords: :class:`CompressOptions`."""
    settings = settings or Settings.from_env()
    options = options or CompressOptions(**fields)
    built = build_variant(name, version, kind, settings, options)
    outcome = built.outcome
    if outcome.passed or options.register_refused:
        outcome.version = register(built.model_uri, name, alias=None, settings=settings, tags=built.version_tags)
        _card_lists_variants(ModelStore(settings), name, outcome.parent)
    return outcome


def compress_all(name: str, version: str, settings: Settings | None = None,
                 options: CompressOptions | None = None, **fields) -> list[VariantOutcome | str]:
    """Every kind the family supports; a kind that cannot be built gives its one-line reason instead."""
    from projects.compression import CannotCompress  # noqa: PLC0415 - serving imports the registry: no builders

    out: list[VariantOutcome | str] = []
    for kind in kinds(name, version, settings):
        try:
            out.append(compress(name, version, kind, settings, options, **fields))
        except CannotCompress as err:
            out.append(f"{kind}: {err}")
    return out


def _card_lists_variants(store: ModelStore, name: str, parent_version: str) -> None:
    """The parent's model card, written again with its variants (a new variant changes nothing else)."""
    try:
        rewrite_card_variants(store, name, store.get_version(name, parent_version))
    except CivicMLError as err:  # the variant is registered; a card that cannot be rewritten says so here
        log.warning("model card of version %s not updated: %s", parent_version, err)


# -- promotion ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Holdout:
    """A held-out frame as :func:`compress` reads one (a promotion holds a frame, not a Dataset)."""

    frame: pd.DataFrame
    target: str
    fingerprint: str


def build_for_promotion(name: str, version: str, policy: VariantPolicy, holdout: pd.DataFrame | None,
                        target: str | None, fingerprint: str | None, settings: Settings) -> tuple[list[str], list[str]]:
    """Build and gate the kinds ``policy.build`` asks for that ``version`` has no passing variant of, on the
    promotion's held-out set; (versions registered, notes). Nothing here raises: a kind that cannot be
    built, or a caller who may not register versions, is a note in the gate report, never a refusal."""
    if not policy.build:
        return [], []
    try:
        wanted = kinds(name, version, settings) if policy.build == ("all",) else list(policy.build)
        require(settings, "register")
    except CivicMLError as err:
        return [], [f"variants not built: {err}"]
    store = ModelStore(settings)
    have = {v.tags.get(TAG_VARIANT) for v in variants_in(store, name, version) if v.tags.get(TAG_VARIANT_GATE) == "passed"}
    frame = _Holdout(holdout, target, fingerprint or "") if holdout is not None and target else None
    built, notes = [], []
    for kind in (k for k in wanted if k not in have):
        try:
            outcome = compress(name, version, kind, settings, CompressOptions(holdout=frame, policy=policy))
        except CivicMLError as err:
            notes.append(f"variant {kind} not built: {err}")
            continue
        except Exception as err:  # noqa: BLE001 - a variant never blocks its parent's promotion
            notes.append(f"variant {kind} not built: {type(err).__name__}: {err}")
            continue
        if outcome.version is not None:
            built.append(outcome.version.version)
    return built, notes


__all__ = ["build_for_promotion", "compress", "compress_all"]
