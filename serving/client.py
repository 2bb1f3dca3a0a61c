"""A small client for CivicML endpoints (any MLflow-protocol server works too)."""

from __future__ import annotations

from typing import Any

import httpx
import pandas as pd


class EndpointClient:
    def __init__(self, url: str, timeout: float = 30.0):
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

    def health(self) -> dict:
        return self._http.get("/health").json()

    def predict(self, rows: pd.DataFrame | list[dict] | Any) -> dict:
        """POST rows; returns the response body ({"predictions": ..., "model": ...}); raises on 4xx/5xx."""
        if isinstance(rows, pd.DataFrame):
            body = {"dataframe_split": rows.to_dict(orient="split", index=False)}
        elif isinstance(rows, list) and rows and isinstance(rows[0], dict):
            body = {"dataframe_records": rows}
        else:
            body = {"inputs": rows}
        response = self._http.post("/invocations", json=body)
        if response.status_code >= 400:
            raise httpx.HTTPStatusError(f"{response.status_code}: {response.json().get('message')}",
                                        request=response.request, response=response)
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
