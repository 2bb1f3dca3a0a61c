"""Which compute path a CPU offers, read from its /proc/cpuinfo flags (serving/cpu.py)."""

from __future__ import annotations

from projects.compression.ort_pyfunc import describe_path, int8_isa
from serving.cpu import best_paths, read_flags

VNNI = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni avx512_bf16\n"
NO_VNNI = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma\n"


def test_a_vnni_cpu_offers_int8_on_vnni_and_bf16():
    flags = read_flags(VNNI)
    assert best_paths(flags) == {"int8": "avx512_vnni", "bf16": "avx512_bf16", "fp32": "avx512f"}
    assert int8_isa(set(flags)) == "avx512_vnni"


def test_a_cpu_without_vnni_says_so_and_falls_back_to_fp32_for_bf16():
    flags = read_flags(NO_VNNI)
    assert best_paths(flags) == {"int8": "avx2 (no VNNI: vpmaddubsw)", "bf16": "none (fp32 instead)", "fp32": "avx2"}
    assert int8_isa(set(flags)) == best_paths(flags)["int8"]
    assert read_flags("no flags line here") == frozenset()


def test_a_graph_is_named_int8_when_it_holds_quantized_operators():
    flags = set(read_flags(VNNI))
    assert describe_path(b"..MatMulInteger..", 2, flags)["kernels"] == "MLAS int8 on avx512_vnni"
    assert describe_path(b"..MatMul..Gemm..", 2, flags) == {"engine": "onnxruntime", "precision": "fp32",
                                                             "kernels": "MLAS fp32 on avx512f", "intra_op_threads": 2}
