"""Variants of the street_scenes CNN: ONNX Runtime static int8, and structured filter pruning.

Both start from the parent's registered artifact (the exported Paddle program),
not from training code's objects, so any registered CNN version can be compressed.

``int8``
    paddle2onnx exports the fp32 program (opset 17; it matches Paddle to about
    1e-7), then ONNX Runtime's static quantization writes a QDQ graph with
    per-channel int8 weights and uint8 activations, calibrated (min-max) on
    ``calibration_size`` training images. Dynamic int8 and signed activations were
    3-13x slower than fp32 on this CPU (DEPENDENCY-NOTES), so they are not offered.
``pruned``
    The fp32 weights are read back from the exported graph into a
    :class:`~projects.street_scenes.model.SceneNet`; every convolution keeps the
    ``keep`` fraction of its filters with the largest L1 norms (with their batch-norm
    statistics and the next layer's matching input channels), which is exactly a
    ``SceneNet`` of width ``round(keep * width)``. It is fine-tuned ``epochs`` epochs on
    the training part with knowledge distillation (the loss mixes the labels with the
    parent's temperature-softened probabilities, weight ``distill``; one warm-up epoch,
    then cosine learning-rate decay), keeping the best epoch on the parent's validation
    part, and logged as an ordinary Paddle program. Several ``keep`` candidates
    (``keep=0.4,0.5``) are tried smallest first; the first within ``tolerance`` of the
    parent on the validation part wins (never the gate's held-out set).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from civicml.lazy import optional
from projects.compression.base import BuiltVariant, CannotCompress, Parent, log_onnx_pyfunc

OPSET = 17


def program_dir(parent: Parent) -> Path:
    folder = parent.path / "artifacts" / "program"
    if not (folder / "inference.pdiparams").exists():
        raise CannotCompress(f"cannot compress: {parent.path} holds no exported Paddle program")
    return folder


def export_onnx(program: Path, prefix: str = "inference") -> bytes:
    """paddle2onnx's fp32 export of an exported Paddle program (``<prefix>.json`` + ``<prefix>.pdiparams``)."""
    paddle2onnx = optional("paddle2onnx", "compress")

    model_file = program / (f"{prefix}.json" if (program / f"{prefix}.json").exists() else f"{prefix}.pdmodel")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        try:
            paddle2onnx.export(str(model_file), str(program / f"{prefix}.pdiparams"), str(out),
                               opset_version=OPSET, auto_upgrade_opset=True, verbose=False,
                               enable_onnx_checker=True, enable_optimize=True)
        except Exception as err:  # noqa: BLE001 - paddle2onnx raises bare exceptions
            raise CannotCompress(f"cannot convert: paddle2onnx failed ({type(err).__name__}: {err})") from None
        return out.read_bytes()


def _images(dataset, limit: int | None = None, seed: int = 0) -> np.ndarray:
    from projects.street_scenes.model import images_of

    images = images_of(dataset.X)
    if limit is not None and len(images) > limit:
        images = images[np.sort(np.random.default_rng(seed).choice(len(images), limit, replace=False))]
    return images


def _spec(parent: Parent, program: Path) -> dict:
    labels = json.loads((program / "labels.json").read_text())
    return {"input": "tensor", "shape": labels["input_shape"], "labels": labels["labels"]}


def _signature(parent: Parent):
    from mlflow.models import Model

    return Model.load(str(parent.path / "MLmodel")).signature


# -- int8 ---------------------------------------------------------------------------------------------
def quantize_static_int8(fp32: bytes, calibration: np.ndarray, input_name: str, batch: int = 32) -> bytes:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([calibration[i:i + batch] for i in range(0, len(calibration), batch)])

        def get_next(self):
            part = next(self.batches, None)
            return None if part is None else {input_name: part}

    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        raw, src, dst = Path(tmp) / "raw.onnx", Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        raw.write_bytes(fp32)
        # folds batch norms into the convolutions first, so that they are quantized as one op
        quant_pre_process(str(raw), str(src), skip_symbolic_shape=True)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        return dst.read_bytes()


def build_int8(parent: Parent, settings: Mapping[str, Any]) -> BuiltVariant:
    onnx = optional("onnx", "compress")

    train, _ = parent.require_data("int8")
    size = int(settings.get("calibration_size", 256))
    program = program_dir(parent)
    fp32 = export_onnx(program)
    input_name = onnx.load_from_string(fp32).graph.input[0].name
    calibration = _images(train, size, seed=int(settings.get("seed", 0)))
    int8 = quantize_static_int8(fp32, calibration, input_name)
    spec = _spec(parent, program)

    def log(name: str, metadata: Mapping[str, Any]) -> str:
        return log_onnx_pyfunc(name, int8, spec, signature=_signature(parent), input_example=calibration[:2],
                               metadata=metadata)

    return BuiltVariant("int8", "paddle2onnx fp32 export, ORT static int8 (QDQ, per-channel int8 weights, uint8 "
                                "activations, min-max calibration)",
                        {"format": "QDQ", "per_channel": True, "activations": "uint8", "weights": "int8",
                         "calibration": "minmax", "calibration_size": len(calibration), "opset": OPSET}, log,
                        {"onnx_fp32_bytes": float(len(fp32)), "onnx_int8_bytes": float(len(int8))})


def build_onnx(parent: Parent, settings: Mapping[str, Any]) -> BuiltVariant:
    """The fp32 graph itself under ONNX Runtime (no data needed)."""
    program = program_dir(parent)
    fp32 = export_onnx(program)
    spec = _spec(parent, program)

    def log(name: str, metadata: Mapping[str, Any]) -> str:
        return log_onnx_pyfunc(name, fp32, spec, signature=_signature(parent),
                               input_example=np.zeros((1, *spec["shape"]), np.float32), metadata=metadata)

    return BuiltVariant("onnx", "paddle2onnx fp32 export served by ONNX Runtime", {"opset": OPSET}, log)


# -- pruned ---------------------------------------------------------------------------------------------
def scene_weights(fp32: bytes) -> list[dict[str, np.ndarray]]:
    """The CNN's layers from its exported graph: per conv ``w``, ``scale``, ``bias``, ``mean``, ``var``;
    last, the classifier ``w`` ``[in, classes]`` and ``b``."""
    onnx = optional("onnx", "compress")
    from onnx import numpy_helper

    graph = onnx.load_from_string(fp32).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    layers: list[dict[str, np.ndarray]] = []
    head: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type == "Conv":
            layers.append({"w": init[node.input[1]]})
        elif node.op_type == "BatchNormalization":
            layers[-1].update(scale=init[node.input[1]], bias=init[node.input[2]], mean=init[node.input[3]],
                              var=init[node.input[4]])
        elif node.op_type in ("MatMul", "Gemm") and node.input[1] in init:
            head["w"] = init[node.input[1]]
        elif node.op_type == "Add" and head and node.input[1] in init:
            head["b"] = init[node.input[1]]
    if len(layers) != 5 or any(len(layer) != 5 for layer in layers) or set(head) != {"w", "b"}:
        raise CannotCompress("cannot prune: the graph is not the street_scenes SceneNet (5 conv+BN, 1 linear)")
    return layers + [head]


def prune_weights(layers: list[dict[str, np.ndarray]], keep: float) -> tuple[int, dict[str, np.ndarray]]:
    """Keep the ``keep`` fraction of each conv's filters by L1 norm; the narrower SceneNet's width and state."""
    convs, head = layers[:-1], layers[-1]
    width = convs[0]["w"].shape[0]
    new_width = max(1, int(round(width * keep)))
    state: dict[str, np.ndarray] = {}
    previous = np.arange(3)
    for k, layer in enumerate(convs):
        out_channels = layer["w"].shape[0]
        n_keep = out_channels * new_width // width
        l1 = np.abs(layer["w"]).reshape(out_channels, -1).sum(axis=1)
        kept = np.sort(np.argsort(-l1, kind="stable")[:n_keep])
        state[f"conv{k}.weight"] = layer["w"][kept][:, previous]
        for name in ("scale", "bias", "mean", "var"):
            state[f"bn{k}.{name}"] = layer[name][kept]
        previous = kept
    state["head.weight"] = head["w"][previous]
    state["head.bias"] = head["b"]
    return new_width, state


def scene_net_state(net, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map :func:`prune_weights`' names onto a ``SceneNet``'s own parameter names."""
    import paddle.nn as nn

    convs = [layer for layer in net.features if isinstance(layer, nn.Conv2D)]
    norms = [layer for layer in net.features if isinstance(layer, nn.BatchNorm2D)]
    out = {}
    names = {id(p): n for n, p in net.state_dict().items()}
    for k, (conv, bn) in enumerate(zip(convs, norms)):
        out[names[id(conv.weight)]] = state[f"conv{k}.weight"]
        out[names[id(bn.weight)]] = state[f"bn{k}.scale"]
        out[names[id(bn.bias)]] = state[f"bn{k}.bias"]
        out[names[id(bn._mean)]] = state[f"bn{k}.mean"]
        out[names[id(bn._variance)]] = state[f"bn{k}.var"]
    linear = net.head[-1]
    out[names[id(linear.weight)]] = state["head.weight"]
    out[names[id(linear.bias)]] = state["head.bias"]
    return out


def _macro_f1(y_true: np.ndarray, probs: np.ndarray, classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, probs.argmax(axis=1), labels=list(range(classes)), average="macro",
                          zero_division=0))


def finetune_pruned(layers, keep: float, data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], teacher,
                    classes: int, settings: Mapping[str, Any]):
    """Prune to ``keep`` and fine-tune with knowledge distillation on ``data`` (``x_train, y_train, x_valid,
    y_valid``); return ``(net, width, best valid macro-F1,
    epochs run)``. The loss is ``(1 - distill) * CE(labels) + distill * T^2 * KL(teacher_T || student_T)``
    (the parent's logits softened by ``temperature``); the learning rate warms up for one epoch then decays
    (cosine); the weights of the best validation epoch are kept."""
    import paddle
    import paddle.nn.functional as F

    from projects.paddle_common import minibatches, seed_everything
    from projects.street_scenes.model import SceneNet, _probabilities, augment

    x_train, y_train, x_valid, y_valid = data
    new_width, state = prune_weights(layers, keep)
    rng = seed_everything(int(settings.get("seed", 0)))
    net = SceneNet(classes, new_width, float(settings.get("dropout", 0.2)))
    net.set_state_dict({k: paddle.to_tensor(v.astype(np.float32)) for k, v in scene_net_state(net, state).items()})
    epochs = int(settings.get("epochs", 12))
    batch_size = int(settings.get("batch_size", 64))
    distill = float(settings.get("distill", 0.7))  # weight of the parent's soft labels in the loss
    temperature = float(settings.get("temperature", 2.0))
    learning_rate = float(settings.get("learning_rate", 3e-3))
    per_epoch = -(-len(x_train) // batch_size)
    steps = max(1, epochs * per_epoch)
    warmup = min(per_epoch, steps // 2)
    cosine = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate, T_max=max(1, steps - warmup))
    schedule = paddle.optimizer.lr.LinearWarmup(cosine, warmup, learning_rate / 10, learning_rate) if warmup else \
        cosine
    optimizer = paddle.optimizer.AdamW(learning_rate=schedule, parameters=net.parameters(), weight_decay=1e-4)
    input_name = teacher.get_inputs()[0].name
    best, best_state = _macro_f1(y_valid, _probabilities(net, x_valid), classes), None
    for _ in range(epochs):
        net.train()
        for idx in minibatches(len(x_train), batch_size, rng):
            batch = augment(x_train[idx], rng)
            logits = net(paddle.to_tensor(batch))
            loss = (1 - distill) * F.cross_entropy(logits, paddle.to_tensor(y_train[idx]))
            if distill > 0:  # the exported parent gives probabilities: log-probabilities are its logits
                soft = np.maximum(teacher.run(None, {input_name: batch})[0], 1e-12) ** (1.0 / temperature)
                soft = paddle.to_tensor(soft / soft.sum(axis=1, keepdims=True))
                student = F.log_softmax(logits / temperature, axis=-1)
                loss = loss + distill * temperature ** 2 * F.kl_div(student, soft, reduction="batchmean")
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            schedule.step()
        score = _macro_f1(y_valid, _probabilities(net, x_valid), classes)
        if best_state is None or score > best:
            best, best_state = score, {k: v.numpy().copy() for k, v in net.state_dict().items()}
    if best_state is not None:
        net.set_state_dict({k: paddle.to_tensor(v) for k, v in best_state.items()})
    net.eval()
    return net, new_width, best, epochs


def _keeps(settings: Mapping[str, Any]) -> list[float]:
    raw = settings.get("keep", 0.5)
    values = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    try:
        keeps = sorted({float(v) for v in values})
    except ValueError:
        raise CannotCompress(f"cannot prune: 'keep' must be a number or comma-separated numbers, got {raw!r}") \
            from None
    for keep in keeps:
        if not 0.0 < keep < 1.0:
            raise CannotCompress(f"cannot prune: 'keep' must be between 0 and 1 (exclusive), got {keep}")
    return keeps


def build_pruned(parent: Parent, settings: Mapping[str, Any]) -> BuiltVariant:
    """Prune and fine-tune; with several ``keep`` candidates (``keep=0.4,0.5,0.6``) the smallest one whose
    validation macro-F1 is within ``tolerance`` of the parent's on the same validation rows is kept (else
    the best-scoring one). The validation part is the parent's own, never the gate's held-out set."""
    from projects.compression.ort_pyfunc import session
    from projects.street_scenes.model import SceneClassifier

    train, valid = parent.require_data("pruned")
    keeps = _keeps(settings)
    tolerance = float(settings.get("tolerance", 0.01))
    program = program_dir(parent)
    spec = _spec(parent, program)
    fp32 = export_onnx(program)
    layers = scene_weights(fp32)
    width = layers[0]["w"].shape[0]
    labels = list(spec["labels"])
    index = {label: k for k, label in enumerate(labels)}
    encoded = {}
    for part, data in (("train", train), ("valid", valid)):
        mapped = data.y.astype(str).map(index)
        if mapped.isna().any():
            raise CannotCompress(f"cannot prune: the {part} data has labels the parent does not know")
        encoded[part] = mapped.to_numpy(np.int64)
    x_train, x_valid = _images(train), _images(valid)
    teacher = session(fp32)
    parent_valid = _macro_f1(encoded["valid"], teacher.run(None, {teacher.get_inputs()[0].name: x_valid})[0],
                             len(labels))
    options = {"dropout": float(parent.metadata.get("dropout", 0.2) or 0.2), **settings}
    tried = []
    for keep in keeps:  # smallest first: stop at the first one within tolerance
        net, new_width, score, epochs = finetune_pruned(layers, keep, (x_train, encoded["train"], x_valid,
                                                        encoded["valid"]), teacher, len(labels), options)
        tried.append((keep, new_width, score, net))
        if parent_valid - score <= tolerance:
            break
    within = [t for t in tried if parent_valid - t[2] <= tolerance]
    keep, new_width, score, net = within[0] if within else max(tried, key=lambda t: t[2])
    fitted = SceneClassifier(net, labels, {"pruned_from_width": width, "width": new_width})

    def log(name: str, metadata: Mapping[str, Any]) -> str:
        return fitted.log_model(name, train.X.head(2), dict(metadata))

    candidates = ", ".join(f"{k:g}: {s:.4f}" for k, _, s, _ in tried)
    distill = float(options.get("distill", 0.7))
    return BuiltVariant("pruned", f"L1-norm structured filter pruning: every conv keeps {keep:.0%} of its filters "
                                  f"(width {width} -> {new_width}), fine-tuned {epochs} epochs with the parent's "
                                  f"soft labels (weight {distill:g}); validation macro-F1 by keep {candidates}, "
                                  f"parent {parent_valid:.4f}",
                        {"keep": keep, "keep_candidates": ",".join(f"{k:g}" for k in keeps), "width": width,
                         "pruned_width": new_width, "finetune_epochs": epochs, "tolerance": tolerance,
                         "finetune_learning_rate": float(options.get("learning_rate", 3e-3)),
                         "distill_weight": distill, "distill_temperature": float(options.get("temperature", 2.0)),
                         "ranking": "l1_norm"}, log,
                        {"valid_macro_f1": score, "parent_valid_macro_f1": parent_valid})
