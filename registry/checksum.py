"""What a registered version's files are: a manifest of per-file SHA-256 digests and one digest over them.

Recorded once at registration, checked on every load, by the same functions, whatever
URI form registered the version (``runs:/<run>/model`` downloads as ``model/...``,
``models:/m-...`` flat): paths are taken relative to the *model root*, the folder that
holds ``MLmodel``.

A load refuses when a recorded file changed or disappeared. Files that appeared since
(``__pycache__/*.pyc`` or ``registered_model_meta`` written by plain MLflow tools that
opened the version in place) are reported, left out of the private copy that is
loaded (:func:`bookkeeping` finds the ones no manifest ever lists), and not refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

# Written by MLflow itself into a downloaded registered version: never model content.
IGNORED = {"registered_model_meta"}
MANIFEST_DIGITS = 16  # per-file digests in the manifest are shortened; the version digest is the full SHA-256


def model_root(folder: str | Path) -> Path:
    """The folder holding ``MLmodel`` (``folder`` itself for a flat download, ``folder/model`` for a run's)."""
    root = Path(folder)
    if (root / "MLmodel").is_file():
        return root
    found = sorted((p.parent for p in root.rglob("MLmodel") if p.is_file()), key=lambda p: len(p.parts))
    return found[0] if found else root


def _files(root: Path) -> list[Path]:
    return sorted((p for p in root.rglob("*") if p.is_file() and p.name not in IGNORED),
                  key=lambda p: p.relative_to(root).as_posix())


def bookkeeping(root: str | Path) -> tuple[str, ...]:
    """MLflow's own files (:data:`IGNORED`) under the model root: never recorded, so never part of what loads."""
    root = Path(root)
    return tuple(sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name in IGNORED))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(root: str | Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under the model root (MLflow's own bookkeeping left out)."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): file_sha256(p) for p in _files(root)}


def digest(root: str | Path, paths=None) -> str:
    """One SHA-256 over ``paths`` (default: every file) of the model root: each path, then its content."""
    root = Path(root)
    chosen = sorted(paths) if paths is not None else [p.relative_to(root).as_posix() for p in _files(root)]
    out = hashlib.sha256()
    for rel in chosen:
        out.update(rel.encode())
        out.update(b"\0")
        with (root / rel).open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                out.update(block)
        out.update(b"\0")
    return out.hexdigest()


def encode(files: dict[str, str]) -> str:
    """The manifest as recorded (compact JSON, shortened per-file digests)."""
    return json.dumps({k: v[:MANIFEST_DIGITS] for k, v in sorted(files.items())}, separators=(",", ":"))


def decode(text: str) -> dict[str, str]:
    return json.loads(text)


@dataclass(frozen=True)
class Check:
    """How a copy compares with its recorded manifest."""

    changed: tuple[str, ...]
    missing: tuple[str, ...]
    added: tuple[str, ...]

    @property
    def intact(self) -> bool:
        return not self.changed and not self.missing


def compare(recorded: dict[str, str], actual: dict[str, str]) -> Check:
    changed = tuple(sorted(p for p in recorded if p in actual and not actual[p].startswith(recorded[p])))
    missing = tuple(sorted(p for p in recorded if p not in actual))
    added = tuple(sorted(p for p in actual if p not in recorded))
    return Check(changed, missing, added)
