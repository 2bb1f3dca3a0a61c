"""Content fingerprints of data frames, shared by data sets (projects) and held-out sets (registry)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's content and schema (column names, dtypes, row order).

    Cells holding arrays (images, embeddings) are hashed by their bytes.
    """
    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    hashable = frame.copy()
    for column in hashable.columns:
        if hashable[column].map(lambda v: isinstance(v, (np.ndarray, list))).any():
            hashable[column] = hashable[column].map(lambda v: hashlib.sha256(np.asarray(v).tobytes()).hexdigest())
    digest.update(pd.util.hash_pandas_object(hashable, index=False).values.tobytes())
    return digest.hexdigest()
