"""The CPU this server runs on, and the compute path each loaded model takes on it (``/health``'s ``compute``).

Models choose their fastest path themselves when they load, from the CPU's flags: the MiniLM router's
Paddle encoder runs oneDNN bfloat16 where the CPU has ``avx512_bf16`` or ``amx_bf16`` (fp32 elsewhere);
an ONNX Runtime int8 variant runs MLAS's u8s8 kernels on AMX (``tdpbusd``) where the CPU has ``amx_int8``,
else AVX-512 VNNI (``vpdpbusd``) where it has ``avx512_vnni`` (AVX-VNNI, else ``vpmaddubsw`` on AVX-512BW /
AVX2). On an Intel Xeon with AMX both were seen on it: ``ONEDNN_VERBOSE`` names ``brgemm:avx10_1_512_amx``
for every bf16 inner product and matmul, ``perf`` shows ORT's hot int8 loop in ``tileloadd`` / ``tdpbusd``.
AMX counts only where the kernel lets the process use its tile data (:func:`amx_permitted`: the libraries
fall back to AVX-512 otherwise). A model that says what it chose (a ``cpu_path`` dict, or a ``precision``, on its
Python model) is reported as it said; any other is reported by its runtime and the CPU's flags.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

# the flags that decide a path here, in the order /health lists them
RELEVANT_FLAGS = ("amx_int8", "amx_bf16", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512bw", "avx512f", "avx2")


def read_flags(cpuinfo: str) -> frozenset[str]:
    """The ``flags`` of the first processor in a /proc/cpuinfo text (empty when there is none)."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


AMX_FLAGS = frozenset({"amx_tile", "amx_bf16", "amx_int8"})


def amx_permitted() -> bool:
    """Whether the kernel lets a process use AMX tile data (x86-64 Linux 5.16 and later: ``arch_prctl``
    ``ARCH_GET_XCOMP_SUPP`` has bit 18, XTILEDATA). oneDNN and ONNX Runtime ask for it before they take their
    AMX kernels and use AVX-512 where it is refused, so a CPU flag alone does not say that AMX is used."""
    import platform
    import sys

    if sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    try:
        import ctypes

        supported = ctypes.c_uint64(0)
        return ctypes.CDLL(None).syscall(158, 0x1021, ctypes.byref(supported)) == 0 and bool(supported.value >> 18 & 1)
    except (OSError, AttributeError):
        return False


def usable(flags: frozenset[str], amx: bool) -> frozenset[str]:
    """``flags`` without AMX's where the kernel does not let a process use it (``amx``: :func:`amx_permitted`)."""
    return flags if amx or not flags & AMX_FLAGS else flags - AMX_FLAGS


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's flags that this process can use."""
    try:
        flags = read_flags(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux, or no /proc: no flags, so every choice falls back to the portable path
        return frozenset()
    return usable(flags, not flags & AMX_FLAGS or amx_permitted())


def best_paths(flags: frozenset[str] | set[str]) -> dict[str, str]:
    """The fastest path this CPU offers for each precision a model may be built in."""
    if "amx_int8" in flags:
        int8 = "amx_int8"
    elif "avx512_vnni" in flags or "avx_vnni" in flags:
        int8 = "avx512_vnni" if "avx512_vnni" in flags else "avx_vnni"
    elif {"avx512bw", "avx512f"} <= flags:
        int8 = "avx512bw (no VNNI: vpmaddubsw)"
    else:  # the names projects/compression/ort_pyfunc.py's int8_isa gives (it may not import serving)
        int8 = "avx2 (no VNNI: vpmaddubsw)" if "avx2" in flags else "sse (no VNNI)"
    bf16 = next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), "none (fp32 instead)")
    fp32 = "avx512f" if "avx512f" in flags else ("avx2" if "avx2" in flags else "sse")
    return {"int8": int8, "bf16": bf16, "fp32": fp32}


def quiet_math_threads() -> None:
    """Math libraries' worker threads must not spin between model calls in a server: the event loop that
    reads and answers requests needs those cores. Paddle's Intel OpenMP spins 200 ms after each parallel
    region by default (``KMP_BLOCKTIME``), longer than the gap between two MiniLM batches, so it spun all
    the time and took a core from the event loop. Set to 0 unless the operator set it; Intel OpenMP reads
    it when it starts, so this runs before the first model loads (ONNX Runtime's pool never spins here:
    ``session.intra_op.allow_spinning`` 0)."""
    os.environ.setdefault("KMP_BLOCKTIME", "0")


def _python_model(runtime: Any) -> Any:
    """The Python model under a (wrapped) pyfunc runtime, or None."""
    while hasattr(runtime, "inner"):
        runtime = runtime.inner
    model = getattr(runtime, "_model", None)
    if model is None or not hasattr(model, "unwrap_python_model"):
        return None
    try:
        return model.unwrap_python_model()
    except Exception:  # noqa: BLE001 - a flavor with no Python model (sklearn, a Paddle program): not known
        return None


def compute_path(runtime: Any, flags: frozenset[str] | None = None) -> dict:
    """What ``runtime``'s model computes with on this CPU: the model's own account where it gives one
    (``cpu_path``, or ``precision``), the runtime's name otherwise; with the CPU's relevant flags."""
    flags = cpu_flags() if flags is None else flags
    inner = _python_model(runtime)
    said = getattr(inner, "cpu_path", None) if inner is not None else None
    if isinstance(said, dict):
        path = dict(said)
    elif isinstance(getattr(inner, "precision", None), str):
        path = {"engine": getattr(inner, "engine", "model's own"), "precision": inner.precision}
    else:
        path = {"engine": f"{getattr(runtime, 'name', 'pyfunc')} runtime", "precision": "as built"}
    path["cpu_flags"] = [f for f in RELEVANT_FLAGS if f in flags]
    path["best_offered"] = best_paths(flags)
    return path


__all__ = ["AMX_FLAGS", "RELEVANT_FLAGS", "amx_permitted", "best_paths", "compute_path", "cpu_flags",
           "quiet_math_threads", "read_flags", "usable"]
