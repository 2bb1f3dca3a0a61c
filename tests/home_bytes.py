"""A byte-level snapshot of a folder, for "a failed command changes nothing stored" checks.

``snapshot(folder)`` maps every path under ``folder`` (folders too) to its bytes' SHA-256 (``None`` for a
folder); a folder that does not exist is ``{}``. Two snapshots are equal only if no file was added,
removed or changed, and no folder was added or removed.

One kind of file is left out: SQLite's ``*-shm`` (the write-ahead log's shared-memory index), which
every connection, a read-only one too, rewrites; it holds no data (SQLite rebuilds it from the
``-wal`` file, which is compared). Reading a store is not changing it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def snapshot(folder: Path) -> dict[str, str | None]:
    folder = Path(folder)
    if not folder.exists():
        return {}
    if not folder.is_dir():
        return {".": hashlib.sha256(folder.read_bytes()).hexdigest()}
    out: dict[str, str | None] = {}
    for path in sorted(folder.rglob("*")):
        if path.name.endswith("-shm"):
            continue
        key = str(path.relative_to(folder))
        out[key] = None if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def changes(before: dict, after: dict) -> list[str]:
    """What differs, as ``+path``, ``-path`` and ``~path`` lines (empty when nothing changed)."""
    return ([f"+{p}" for p in sorted(set(after) - set(before))] + [f"-{p}" for p in sorted(set(before) - set(after))]
            + [f"~{p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]])
