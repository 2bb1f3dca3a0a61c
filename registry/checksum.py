"""SHA-256 of a model's artifact folder: recorded at registration, verified on every load."""

from __future__ import annotations

import hashlib
from pathlib import Path


# Written by the registry itself into the logged model's folder at registration: not model content.
IGNORED = {"registered_model_meta"}


def tree_sha256(folder: str | Path) -> str:
    """A digest over every file's relative path and content, in a stable order."""
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in IGNORED):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()
