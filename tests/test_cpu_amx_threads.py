"""AMX counts as a compute path only where the kernel allows it, and a text encoder's thread count
(serving/cpu.py, projects/text_encoder/runtime.py, projects/compression/ort_pyfunc.py)."""

from __future__ import annotations

import os

from projects.compression import ort_pyfunc
from projects.text_encoder import runtime
from serving.cpu import AMX_FLAGS, amx_permitted, best_paths, read_flags, usable

AMX = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512f avx512bw avx512_vnni avx512_bf16 " \
      "amx_tile amx_bf16 amx_int8\n"


def test_amx_is_offered_only_where_the_kernel_allows_its_tile_data():
    flags = read_flags(AMX)
    assert best_paths(usable(flags, amx=True)) == {"int8": "amx_int8", "bf16": "amx_bf16", "fp32": "avx512f"}
    refused = usable(flags, amx=False)
    assert not refused & AMX_FLAGS
    assert best_paths(refused) == {"int8": "avx512_vnni", "bf16": "avx512_bf16", "fp32": "avx512f"}
    assert ort_pyfunc.int8_isa(set(refused)) == "avx512_vnni"


def test_the_flags_every_runtime_reads_agree_on_amx():
    permitted = amx_permitted()
    assert permitted == runtime.amx_permitted() == ort_pyfunc.amx_permitted()
    for flags in (runtime.cpu_flags(), ort_pyfunc.cpu_flags()):
        assert permitted or not flags & AMX_FLAGS


def test_a_text_encoder_leaves_a_core_unless_the_operator_sets_its_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = runtime.physical_cores()
    assert cores == ort_pyfunc.physical_cores() and 1 <= cores <= (os.cpu_count() or 1)
    assert runtime.default_threads() == max(1, min(cores - 1, 4))
    assert ort_pyfunc.default_threads() == max(1, cores - 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.default_threads() == ort_pyfunc.default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    assert runtime.default_threads() == max(1, min(cores - 1, 4))
