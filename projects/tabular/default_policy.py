"""The promotion policy a new use-case file starts with (``civicml init``) and that governs a use-case file
which names none of its own: gates that a model no better than guessing fails.

* ``beat_baseline``: beat the trivial baseline (the majority class; the median or mean of the
  training target) on the held-out set: by 0.02 of a classification score, or by 5% of the
  baseline's error for regression and forecasting (their errors are in the target's own units);
* ``max_regression: 0.0``: never worse than the current champion on the same rows;
* ``min_value: null``: no absolute floor, since nobody yet knows what this data allows;
  a person sets one when they do.

Plain data (this module is in ``projects``, below ``registry``, which reads and checks
it as a :class:`registry.policy.PromotionPolicy`; fields: docs/policy.md).
"""

from __future__ import annotations

from typing import Any

CLASSIFICATION_MARGIN = 0.02
ERROR_MARGIN = 0.05  # a fraction of the baseline's error


def default_policy(task: str, metric: str | None = None) -> dict[str, Any]:
    """The policy fields of a use case of ``task``, judged by ``metric`` (left out when None: a use-case
    file's inline policy then follows the file's own ``metric``)."""
    margin = ({"margin": CLASSIFICATION_MARGIN} if task == "classification"
              else {"margin": ERROR_MARGIN, "relative": True})
    fields = {"metric": metric} if metric else {}
    return {**fields, "min_value": None, "beat_baseline": margin, "max_regression": 0.0}


__all__ = ["default_policy"]
