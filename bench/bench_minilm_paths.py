"""The MiniLM encoder's CPU paths, in process, side by side: Paddle fp32 / bf16 and ONNX Runtime fp32 / int8.

    PYTHONPATH=. .venv/bin/python bench/bench_minilm_paths.py [--rounds 7] [--batch 32] [--all] [--only a,b]

Every path encodes the same batches of 311 texts (the generator's held-out descriptions, and the one
short request ``bench_serving.py`` sends, 32 times); rounds rotate the order so that other processes'
load hits every path alike. Per path: the median wall time and the median CPU time (this process, all
threads) per row, and the cosine of its embeddings to Paddle fp32's. ONNX Runtime int8 variants:
dynamic (QOperator: DynamicQuantizeLinear + MatMulInteger, U8S8) as built before (ORT transformer
fusions first) and now (unfused, SkipLayerNorm and BiasGelu fusions off in the session); with ``--all``
also per-tensor, ``reduce_range``, static QDQ (S8S8 or U8S8) calibrated on other held-out texts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHORT = "Huge pothole on Oak Avenue, two flat tires"


def _texts(n: int, seed: int) -> list[str]:
    from projects import get_use_case

    with tempfile.TemporaryDirectory() as tmp:
        frame = get_use_case("service_requests").holdout(Path(tmp), n=n, seed=seed).frame
    return frame["description"].astype(str).tolist()


def _ort_session(graph: bytes, threads: int, level: str = "all", disabled: tuple = ()):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    options.log_severity_level = 3
    return ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled) or None)


def _static_qdq(graph: bytes, calibration: list[tuple], activations: str) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"input_ids": i, "attention_mask": m} for i, m in calibration])

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(graph)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if activations == "s8" else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                        extra_options={"ActivationSymmetric": activations == "s8"})
        return dst.read_bytes()


def _dynamic(graph: bytes, per_channel: bool, reduce_range: bool) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(graph)
        quantize_dynamic(str(src), str(dst), per_channel=per_channel, reduce_range=reduce_range,
                         weight_type=QuantType.QInt8)
        return dst.read_bytes()


def _paths(args, tokenized_calibration) -> dict:
    from projects.compression.cnn import export_onnx
    from projects.compression.text import DISABLED_OPTIMIZERS, fuse_transformer
    from projects.text_encoder import InferenceEncoder
    from projects.text_encoder.assets import tokenizer_path
    from projects.text_encoder.export import pretrained_encoder_folder

    folder = pretrained_encoder_folder("mean")
    threads = args.threads
    paths = {}
    for precision in ("fp32", "bf16"):
        encoder = InferenceEncoder(folder / "minilm", tokenizer_path(), 128, precision, threads=threads)
        paths[f"paddle {precision}"] = encoder.embed_ids
    fp32 = export_onnx(folder, "minilm")
    fused = fuse_transformer(fp32)
    now = DISABLED_OPTIMIZERS
    # (graph, optimization level, fusions disabled at session creation)
    graphs = {"ort fp32": (fp32, "all", now),
              "ort int8 dynamic per-channel, fused (before)": (_dynamic(fused, True, False), "all", ()),
              "ort int8 dynamic per-channel, unfused, no SkipLayerNorm/BiasGelu fusion (now)":
                  (_dynamic(fp32, True, False), "all", now)}
    if args.all:
        graphs["ort fp32, ORT fusions"] = (fp32, "all", ())
        graphs["ort int8 now, opt level basic"] = (graphs[next(k for k in graphs if "(now)" in k)][0], "basic", ())
        graphs["ort int8 dynamic per-tensor"] = (_dynamic(fp32, False, False), "all", now)
        graphs["ort int8 dynamic per-channel reduce_range"] = (_dynamic(fp32, True, True), "all", now)
        graphs["ort int8 static QDQ S8S8"] = (_static_qdq(fp32, tokenized_calibration, "s8"), "all", now)
        graphs["ort int8 static QDQ U8S8"] = (_static_qdq(fp32, tokenized_calibration, "u8"), "all", now)
    for name, (graph, level, disabled) in graphs.items():
        paths[name] = (lambda s: lambda ids, mask: s.run(None, {"input_ids": ids, "attention_mask": mask})[0])(
            _ort_session(graph, threads, level, disabled))
    if args.only:
        wanted = args.only.split(",")
        paths = {k: v for k, v in paths.items() if k == "paddle fp32" or any(w in k for w in wanted)}
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--all", action="store_true", help="also per-tensor, reduce_range, static QDQ (S8S8, U8S8), "
                                                          "ORT's own fusions, optimization level basic")
    parser.add_argument("--only", help="paths whose name contains one of these (paddle fp32 always)")
    args = parser.parse_args()

    from projects.text_encoder.assets import tokenizer_path
    from projects.text_encoder.runtime import amx_permitted, cpu_flags, load_tokenizer, tokenize

    flags = cpu_flags()  # AMX's flags only where the kernel lets this process use AMX
    print(f"CPU: {os.cpu_count()} cores; " + " ".join(f"{f}={f in flags}" for f in
                                                        ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
                                                         "amx_int8")) + f"; AMX permitted: {amx_permitted()}")
    tokenizer = load_tokenizer(tokenizer_path(), 128)
    texts = sorted(_texts(4 * args.batch, seed=11), key=len)
    batches = {"held-out texts": [tokenize(tokenizer, texts[i:i + args.batch]) for i in range(0, len(texts), args.batch)],
               "the served short text": [tokenize(tokenizer, [SHORT] * args.batch)]}
    calibration = [tokenize(tokenizer, b) for b in np.array_split(np.array(_texts(64, seed=12), object), 8)]
    paths = _paths(args, [(i, m) for i, m in calibration])
    reference = {kind: [paths["paddle fp32"](i, m) for i, m in bs] for kind, bs in batches.items()}
    wall = {(p, k): [] for p in paths for k in batches}
    cpu = {(p, k): [] for p in paths for k in batches}
    cosine = {}
    names = list(paths)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            for kind, bs in batches.items():
                rows = sum(len(i) for i, _ in bs)
                started, cpu0 = time.perf_counter(), time.process_time()
                out = [paths[name](i, m) for i, m in bs]
                wall[name, kind].append((time.perf_counter() - started) * 1000 / rows)
                cpu[name, kind].append((time.process_time() - cpu0) * 1000 / rows)
                if r == 0:
                    a, b = np.concatenate(out), np.concatenate(reference[kind])
                    cosine[name, kind] = float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1)
                                                      / np.linalg.norm(b, axis=1)))
        print(f"round {r + 1}/{args.rounds} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    med = lambda xs: float(np.median(xs))  # noqa: E731
    base = {k: med(cpu["paddle fp32", k]) for k in batches}
    lines = [f"batch {args.batch}, {args.threads} intra-op threads, {args.rounds} rotating rounds, load average "
             f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", "",
             "| path | texts | wall ms/row | CPU ms/row | rows/s (wall) | CPU vs paddle fp32 | min cosine to paddle fp32 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name in names:
        for kind in batches:
            w, c = med(wall[name, kind]), med(cpu[name, kind])
            lines.append(f"| {name} | {kind} | {w:.2f} | {c:.2f} | {1000 / w:.0f} | {base[kind] / c:.2f}x | "
                         f"{cosine[name, kind]:.4f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
