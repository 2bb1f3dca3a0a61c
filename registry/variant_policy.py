"""The ``variants:`` section of a promotion policy: the bounds a compressed or converted variant must keep
beside its parent, per kind, and which kinds promotion builds (the room's leaf: it reads YAML and
gives verdicts, it loads and registers nothing).

All fields optional::

    variants:
      max_quality_loss: 0.02      # metric points the variant may lose vs its parent (held-out set)
      min_agreement: 0.95         # share of held-out rows with the parent's answer
      min_speedup: 1.0            # parent p50 / variant p50 at `speedup_batch`
      speedup_batch: 64           # 1, 32 or 64
      min_size_reduction: null    # parent bytes / variant bytes
      min_cosine: null            # mean cosine of class probabilities
      kinds:                      # per-kind overrides of the fields above
        int8: {min_speedup: 1.4, min_size_reduction: 3.5, max_quality_loss: 0.005}
        onnx: {max_quality_loss: 0.0, min_agreement: 1.0, speedup_batch: 1}
      build: [onnx]               # kinds `promote` builds for a new champion that has no passing one
                                  # ("all": every kind its family supports); default: none
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from civicml.errors import InvalidInput, did_you_mean
from registry.gates import GateVerdict


@dataclass(frozen=True)
class VariantBounds:
    max_quality_loss: float = 0.02
    min_agreement: float = 0.95
    min_speedup: float | None = None
    speedup_batch: int = 64
    min_size_reduction: float | None = None
    min_cosine: float | None = None

    def gates(self, comparison) -> list[GateVerdict]:
        c = comparison
        within = c.quality_loss <= self.max_quality_loss + 1e-12
        out = [GateVerdict(f"{c.metric} loss <= {self.max_quality_loss}", within, c.quality_loss, self.max_quality_loss,
                           f"parent {c.parent[c.metric]:.4f}, variant {c.variant[c.metric]:.4f} on {c.rows} "
                           f"held-out rows"),
               GateVerdict(f"agreement >= {self.min_agreement}", c.agreement >= self.min_agreement, c.agreement,
                           self.min_agreement, f"same answer as the parent on {c.agreement:.2%} of held-out rows")]
        if self.min_cosine is not None:
            cos = c.cosine if c.cosine is not None else float("nan")
            out.append(GateVerdict(f"cosine >= {self.min_cosine}", cos >= self.min_cosine, cos, self.min_cosine,
                                   "mean cosine of class probabilities"))
        if self.min_speedup is not None:
            s = c.speedup(self.speedup_batch)
            out.append(GateVerdict(f"speed-up b{self.speedup_batch} >= {self.min_speedup}", s >= self.min_speedup, s,
                                   self.min_speedup, f"p50 at batch {self.speedup_batch}: parent "
                                   f"{c.parent[f'latency_b{self.speedup_batch}_p50_ms']:.2f} ms, variant "
                                   f"{c.variant[f'latency_b{self.speedup_batch}_p50_ms']:.2f} ms"))
        if self.min_size_reduction is not None:
            r = c.size_reduction
            out.append(GateVerdict(f"size reduction >= {self.min_size_reduction}", r >= self.min_size_reduction, r,
                                   self.min_size_reduction, f"parent {c.parent['size_bytes']:.0f} B, variant "
                                   f"{c.variant['size_bytes']:.0f} B"))
        return out


# Built in: an ONNX conversion must give exactly the parent's answers; the rest may lose a little.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {"onnx": {"max_quality_loss": 0.0, "min_agreement": 1.0}}
_BOUND_FIELDS = [f.name for f in fields(VariantBounds)]


@dataclass(frozen=True)
class VariantPolicy:
    base: Mapping[str, Any] = field(default_factory=dict)
    kinds: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str | None = None
    build: tuple[str, ...] = ()  # kinds promotion builds; ("all",) for every kind the family supports

    def bounds(self, kind: str) -> VariantBounds:
        return replace(VariantBounds(), **{**KIND_DEFAULTS.get(kind, {}), **self.base, **self.kinds.get(kind, {})})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "policy", source: str | None = None):
        from projects.compression import KINDS  # noqa: PLC0415 - serving reads policies, never loads builders

        if data is not None and not isinstance(data, Mapping):
            raise InvalidInput(f"{where}: field 'variants' must be a mapping")
        data = dict(data or {})
        build = _build_kinds(data.pop("build", None), where, KINDS)
        kinds = data.pop("kinds", None) or {}
        if not isinstance(kinds, dict):
            raise InvalidInput(f"{where}: field 'variants.kinds' must map variant kinds to bounds")
        for kind in kinds:
            if kind not in KINDS:
                raise InvalidInput(f"{where}: unknown variant kind 'variants.kinds.{kind}' (known: {', '.join(KINDS)})")
        base = _bounds(data, f"{where}: variants")
        return cls(base, {k: _bounds(v or {}, f"{where}: variants.kinds.{k}") for k, v in kinds.items()}, source,
                   build)

    @classmethod
    def from_yaml(cls, path: str | Path | None) -> "VariantPolicy":
        if path is None or not Path(path).exists():
            return cls()
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as err:
            raise InvalidInput(f"policy file {path}: not valid YAML ({err.__class__.__name__})") from None
        return cls.from_dict(data.get("variants") if isinstance(data, dict) else None, f"policy file {path}",
                             str(path))


def _build_kinds(raw: Any, where: str, known) -> tuple[str, ...]:
    if raw is None:
        return ()
    if raw == "all":
        return ("all",)
    raw = [raw] if isinstance(raw, str) else raw
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise InvalidInput(f"{where}: field 'variants.build' must list variant kinds (or be 'all'), got {raw!r}")
    for kind in raw:
        if kind not in known:
            raise InvalidInput(f"{where}: unknown variant kind '{kind}' in 'variants.build' (known: "
                               f"{', '.join(known)}, or all)")
    return tuple(dict.fromkeys(raw))


def _bounds(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: expected a mapping of {', '.join(_BOUND_FIELDS)}")
    out = {}
    for key, value in raw.items():
        if key not in _BOUND_FIELDS:
            raise InvalidInput(f"{where}: unknown field '{key}'{did_you_mean(key, _BOUND_FIELDS)} "
                               f"(known: {', '.join(_BOUND_FIELDS)})")
        if value is None and key.startswith("min_") and key not in ("min_agreement",):
            out[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{where}: field '{key}' must be a number, got {value!r}")
        if key == "speedup_batch" and value not in (1, 32, 64):
            raise InvalidInput(f"{where}: field 'speedup_batch' must be 1, 32 or 64, got {value!r}")
        if value < 0:
            raise InvalidInput(f"{where}: field '{key}' must be >= 0, got {value!r}")
        out[key] = int(value) if key == "speedup_batch" else float(value)
    return out


__all__ = ["KIND_DEFAULTS", "VariantBounds", "VariantPolicy"]
