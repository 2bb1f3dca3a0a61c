"""A pretrained sentence encoder (all-MiniLM-L6-v2) in PaddlePaddle, and its serving runtime.

Public face::

    from projects.text_encoder import load_pretrained, pretrained_inference_encoder
    net = load_pretrained()                      # Paddle dynamic graph, for fine-tuning
    encoder = pretrained_inference_encoder()     # paddle.inference + oneDNN, bf16 where the CPU has it
    encoder.precision                            # "bf16" or "fp32"
    vectors = encoder.encode(["Pothole on Main St"])

Paddle is imported only when one of these is used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BertConfig": "assets", "model_dir": "assets", "load_tokenizer": "assets", "load_weights": "assets",
    "MiniLM": "model", "load_pretrained": "model", "POOLINGS": "model",
    "export_encoder": "export", "write_router": "export", "pretrained_encoder_folder": "export",
    "pretrained_inference_encoder": "export",
    "InferenceEncoder": "runtime", "LinearHead": "runtime", "TextRouter": "runtime",
    "choose_precision": "runtime", "tokenize": "runtime",
}


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'projects.text_encoder' has no attribute {name!r}")
    return getattr(importlib.import_module(f"projects.text_encoder.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
