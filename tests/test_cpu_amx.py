"""AMX counts as a compute path only where the kernel allows it (serving/cpu.py, projects/text_encoder/runtime.py,
projects/compression/ort_pyfunc.py)."""

from __future__ import annotations

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


def test_a_text_variant_names_the_path_it_took(tmp_path):
    """A tiny text graph (mean of the token ids as a one-number embedding) loaded as an ONNX text variant."""
    import json
    import shutil
    from types import SimpleNamespace

    import numpy as np
    import pytest

    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from projects.text_encoder.assets import tokenizer_path

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "t"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "t"])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["b", 1])
    nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["embedding"], axes=[1], keepdims=1)]
    graph = helper.make_graph(nodes, "mean", [ids, mask], [out])
    folder = tmp_path / "onnx"
    folder.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), folder / "model.onnx")
    shutil.copyfile(tokenizer_path(), folder / "tokenizer.json")
    np.savez(folder / "head.npz", weight=np.ones((2, 1), np.float32), bias=np.zeros(2, np.float32),
             labels=np.asarray(["a", "b"]), scale=1.0)
    (folder / "spec.json").write_text(json.dumps({"input": "text", "column": "description"}))
    model = ort_pyfunc.OnnxVariant()
    model.load_context(SimpleNamespace(artifacts={"onnx": str(folder)}))
    assert model.cpu_path == ort_pyfunc.describe_path(b"", ort_pyfunc.physical_cores())  # no int8 operators: fp32
    assert model.session.get_session_options().intra_op_num_threads == ort_pyfunc.physical_cores()
    answer = model.predict(None, ["Pothole on Main Street", "Missed garbage pickup"])
    assert list(answer.columns) == ["label", "p_a", "p_b"] and len(answer) == 2
