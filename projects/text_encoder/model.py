"""MiniLM (a 6-layer BERT) as a Paddle 3 dynamic-graph network, loading the pretrained weights.

Embeddings (word + position + token type, LayerNorm), post-LN encoder layers
(self-attention, residual, LayerNorm; GELU feed-forward, residual, LayerNorm),
then pooling over the attention mask and L2 normalisation, as
sentence-transformers' all-MiniLM-L6-v2 does. ``forward`` is written with
shape-agnostic ops so that ``paddle.jit.save`` can export it with dynamic
batch and sequence dimensions.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from projects.text_encoder.assets import BertConfig, load_config, load_weights

POOLINGS = ("mean", "cls")
_MASKED = -1e9  # added to attention scores of padding; exp() of it is exactly 0 in float32


class SelfAttention(nn.Layer):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)

    def _split(self, x):
        # (batch, seq, hidden) -> (batch, heads, seq, head_dim); 0 copies the input's dimension
        return x.reshape([0, 0, self.heads, self.head_dim]).transpose([0, 2, 1, 3])

    def forward(self, hidden, mask_bias):
        q, k, v = self._split(self.query(hidden)), self._split(self.key(hidden)), self._split(self.value(hidden))
        scores = paddle.matmul(q, k, transpose_y=True) / math.sqrt(self.head_dim) + mask_bias
        context = paddle.matmul(F.softmax(scores, axis=-1), v)
        context = context.transpose([0, 2, 1, 3]).reshape([0, 0, self.heads * self.head_dim])
        return self.norm(hidden + self.output(context))


class EncoderLayer(nn.Layer):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)

    def forward(self, hidden, mask_bias):
        hidden = self.attention(hidden, mask_bias)
        return self.norm(hidden + self.output(F.gelu(self.intermediate(hidden))))


class MiniLM(nn.Layer):
    """Token ids and attention mask in, one L2-normalised sentence embedding per row out."""

    def __init__(self, config: BertConfig | None = None, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.config = config or BertConfig()
        self.pooling = pooling
        c = self.config
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.embedding_norm = nn.LayerNorm(c.hidden_size, epsilon=c.layer_norm_eps)
        self.layers = nn.LayerList([EncoderLayer(c) for _ in range(c.num_hidden_layers)])

    # -- forward, in pieces so that fine-tuning can run the frozen prefix once ------------------------------
    def embed(self, input_ids, attention_mask):
        positions = paddle.arange(0, paddle.shape(input_ids)[1], dtype="int64").unsqueeze(0)
        hidden = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
                  + self.token_type_embeddings(paddle.zeros_like(input_ids)))
        mask_bias = (1.0 - attention_mask.astype(hidden.dtype)).unsqueeze([1, 2]) * _MASKED
        return self.embedding_norm(hidden), mask_bias

    def encode_layers(self, hidden, mask_bias, start: int = 0, stop: int | None = None):
        for layer in self.layers[start:stop]:
            hidden = layer(hidden, mask_bias)
        return hidden

    def pool(self, hidden, attention_mask):
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.astype(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * mask).sum(axis=1) / paddle.clip(mask.sum(axis=1), min=1e-9)
        return F.normalize(pooled, p=2, axis=-1)

    def forward(self, input_ids, attention_mask):
        hidden, mask_bias = self.embed(input_ids, attention_mask)
        return self.pool(self.encode_layers(hidden, mask_bias), attention_mask)

    # -- weights -----------------------------------------------------------------------------------------
    def load_pretrained(self, weights: Mapping[str, np.ndarray]) -> "MiniLM":
        """Copy a Hugging Face BERT checkpoint's tensors in (Linear weights are transposed: HF stores out x in)."""
        state = {}
        for ours, theirs in _name_map(self.config.num_hidden_layers).items():
            array = np.asarray(weights[theirs], dtype=np.float32)
            if ours.endswith(".weight") and array.ndim == 2 and "embeddings" not in ours:
                array = array.T
            state[ours] = array
        missing = set(self.state_dict()) - set(state)
        if missing:
            raise KeyError(f"no pretrained tensor for {sorted(missing)[:3]}")
        self.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
        return self


class MiniLMPrefix(nn.Layer):
    """The first ``stop`` layers of a :class:`MiniLM` (shared weights): hidden states, not embeddings.

    Fine-tuning exports this frozen part and runs it once through ``paddle.inference``."""

    def __init__(self, net: MiniLM, stop: int):
        super().__init__()
        self.net = net
        self.stop = int(stop)
        self.pooling = net.pooling

    def forward(self, input_ids, attention_mask):
        hidden, mask_bias = self.net.embed(input_ids, attention_mask)
        return self.net.encode_layers(hidden, mask_bias, 0, self.stop)


def _name_map(layers: int) -> dict[str, str]:
    names = {
        "word_embeddings.weight": "embeddings.word_embeddings.weight",
        "position_embeddings.weight": "embeddings.position_embeddings.weight",
        "token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
        "embedding_norm.weight": "embeddings.LayerNorm.weight",
        "embedding_norm.bias": "embeddings.LayerNorm.bias",
    }
    for i in range(layers):
        hf, ours = f"encoder.layer.{i}", f"layers.{i}"
        parts = {
            "attention.query": "attention.self.query", "attention.key": "attention.self.key",
            "attention.value": "attention.self.value", "attention.output": "attention.output.dense",
            "attention.norm": "attention.output.LayerNorm", "intermediate": "intermediate.dense",
            "output": "output.dense", "norm": "output.LayerNorm",
        }
        for mine, theirs in parts.items():
            for tensor in ("weight", "bias"):
                names[f"{ours}.{mine}.{tensor}"] = f"{hf}.{theirs}.{tensor}"
    return names


def load_pretrained(pooling: str = "mean") -> MiniLM:
    """The pretrained all-MiniLM-L6-v2 as a Paddle network in eval mode."""
    model = MiniLM(load_config(), pooling=pooling).load_pretrained(load_weights())
    model.eval()
    return model
