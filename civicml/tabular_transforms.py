"""The two column transformers of tabular use cases that scikit-learn lacks, saved inside logged models.

They live in ``civicml`` (not ``projects``) because a served model loads them:
serving never imports training code. Both are stateless and depend only on
numpy and pandas, so a model (skops format) trusts them by name.

* :class:`DateParts` turns a date/time column sent as text into numbers: year,
  month, day of month, day of week, hour, and days since 1970 (for trends);
  an unparseable or missing date becomes NaN (imputed downstream).
* :class:`TextColumn` gives a single free-text column to ``TfidfVectorizer``
  as the 1-D sequence of strings it wants, with missing text as "".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

PARTS = ("year", "month", "day", "weekday", "hour", "days")


class DateParts(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X, dtype=object))
        columns = []
        for name in frame.columns:
            when = pd.to_datetime(frame[name].astype(object).where(frame[name].notna(), None), errors="coerce",
                                  utc=True, format="mixed")
            when = when.dt.tz_convert(None)
            columns += [when.dt.year, when.dt.month, when.dt.day, when.dt.day_of_week, when.dt.hour,
                        (when - pd.Timestamp("1970-01-01")).dt.total_seconds() / 86400.0]
        return np.column_stack([np.asarray(c, dtype=float) for c in columns]) if columns \
            else np.empty((len(frame), 0))

    def get_feature_names_out(self, input_features=None):
        names = list(input_features) if input_features is not None else ["date"]
        return np.asarray([f"{n}_{p}" for n in names for p in PARTS], dtype=object)


class TextColumn(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        values = X.iloc[:, 0] if isinstance(X, pd.DataFrame) else pd.Series(np.asarray(X, dtype=object).ravel())
        return values.where(values.notna(), "").astype(str).to_numpy()


TRUSTED_PREFIX = "civicml.tabular_transforms."

__all__ = ["DateParts", "TextColumn", "TRUSTED_PREFIX"]
