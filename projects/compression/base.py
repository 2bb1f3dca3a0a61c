"""The nouns of compression: the :class:`Parent` a variant is built from, and the :class:`BuiltVariant`.

A builder gets a verified local copy of the parent version (an MLflow model
folder), its use case and family, and a sample of the data it was trained on
(for calibration, fine-tuning, or choosing how much to prune). It returns a
:class:`BuiltVariant` that can log itself into the active MLflow run. Builders
never register or gate anything: ``registry.variants`` measures, gates and
registers what they build.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from civicml.errors import InvalidInput
from projects.base import Dataset, UseCase

ORT_PYFUNC_FILE = Path(__file__).with_name("ort_pyfunc.py")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # either one computes bfloat16 natively


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as ``/proc/cpuinfo`` lists them (empty if it cannot be read)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_refusal(flags: set[str] | None = None) -> str | None:
    """Why a bf16 variant cannot be built on this CPU (one line), or None where it computes bf16 natively."""
    flags = cpu_flags() if flags is None else flags
    if any(flag in flags for flag in BF16_FLAGS):
        return None
    return ("cannot build 'bf16': this CPU lacks the avx512_bf16 and amx_bf16 flags (/proc/cpuinfo), so bf16 "
            "would be emulated and slower than fp32")


class CannotCompress(InvalidInput):
    """This parent cannot be turned into this variant (the message says why); nothing was built."""


@dataclass
class Parent:
    """The registered version a variant is built from."""

    path: Path  # verified local MLflow model folder
    use_case: UseCase
    family: str
    metadata: Mapping[str, Any]
    train: Dataset | None = None  # the parent's training part (same split as its training run)
    valid: Dataset | None = None  # the parent's validation part: what pruning amounts are chosen on

    @property
    def flavors(self) -> dict:
        import yaml

        return (yaml.safe_load((self.path / "MLmodel").read_text()) or {}).get("flavors") or {}

    def require_data(self, kind: str) -> tuple[Dataset, Dataset]:
        if self.train is None or self.valid is None:
            raise CannotCompress(f"cannot build '{kind}': it needs the parent's training data (pass data)")
        return self.train, self.valid


@dataclass
class BuiltVariant:
    kind: str
    method: str  # one line: what was done
    params: dict[str, Any]  # logged as the variant run's params
    log: Callable[[str, Mapping[str, Any]], str]  # (artifact name, metadata) -> model URI, in the active run
    figures: dict[str, float] = field(default_factory=dict)  # what the builder measured itself (logged)


def _requirements(*dists: str) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in ("mlflow", "numpy", "pandas", *dists):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            pins.append(dist)
    return pins


def log_onnx_pyfunc(name: str, onnx_bytes: bytes, spec: Mapping[str, Any], *, signature, input_example,
                    metadata: Mapping[str, Any]) -> str:
    """Log an ONNX graph as a models-from-code pyfunc served by ``ort_pyfunc.py``; return its URI."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "onnx"
        folder.mkdir()
        (folder / "model.onnx").write_bytes(onnx_bytes)
        (folder / "spec.json").write_text(json.dumps(dict(spec)))
        info = mlflow.pyfunc.log_model(name=name, python_model=str(ORT_PYFUNC_FILE), artifacts={"onnx": str(folder)},
                                       signature=signature, input_example=input_example, metadata=dict(metadata),
                                       pip_requirements=_requirements("onnxruntime"))
    return info.model_uri
