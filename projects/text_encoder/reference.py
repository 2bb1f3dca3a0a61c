"""An independent float64 numpy forward pass of the same checkpoint, for tests.

It reads the Hugging Face tensors by their own names and shares no code with
:mod:`projects.text_encoder.model`, so agreement between the two checks the
Paddle network's wiring, not just its arithmetic.
"""

from __future__ import annotations

from math import erf, sqrt

import numpy as np

_erf = np.vectorize(erf)


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _dense(x, weights, prefix):
    return x @ weights[f"{prefix}.weight"].T + weights[f"{prefix}.bias"]


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x / sqrt(2.0)))


def encode(weights, input_ids, attention_mask, heads: int = 12, eps: float = 1e-12, pooling: str = "mean"):
    """Sentence embeddings (batch, hidden), float64, L2-normalised."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items() if v.dtype != np.int64}
    ids = np.asarray(input_ids)
    mask = np.asarray(attention_mask, dtype=np.float64)
    batch, length = ids.shape
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length][None]
         + w["embeddings.token_type_embeddings.weight"][0][None, None])
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    hidden = x.shape[-1]
    dim = hidden // heads
    layers = 1 + max(int(k.split(".")[2]) for k in w if k.startswith("encoder.layer."))
    for i in range(layers):
        p = f"encoder.layer.{i}"

        def split(t):
            return t.reshape(batch, length, heads, dim).transpose(0, 2, 1, 3)

        q, k, v = (split(_dense(x, w, f"{p}.attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dim)
        scores = np.where(mask[:, None, None, :] > 0, scores, -np.inf)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
        x = _layer_norm(x + _dense(context, w, f"{p}.attention.output.dense"),
                        w[f"{p}.attention.output.LayerNorm.weight"], w[f"{p}.attention.output.LayerNorm.bias"], eps)
        ffn = _dense(_gelu(_dense(x, w, f"{p}.intermediate.dense")), w, f"{p}.output.dense")
        x = _layer_norm(x + ffn, w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"], eps)
    if pooling == "cls":
        pooled = x[:, 0]
    else:
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
