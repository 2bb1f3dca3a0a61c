"""Try-it for a model that takes pictures (street scenes): an uploaded image, the answer, and which parts of
the picture it rests on.

The model's signature says what it takes: a float32 tensor ``[-1, 3, H, W]`` (or ``[-1, H, W, 3]``) in
[0, 1]. The upload is read as the street-scenes integration reads a file (RGB, centre-cropped square,
resized with a box filter). The explanation is region occlusion: the picture is cut into a 4 x 4 grid
and each region in turn is replaced by the picture's mean colour; a region's weight is how much the
answer's probability drops without it (positive: it supported the answer). One batch of 17 pictures.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from civicml.answers import band, label_of_column
from civicml.errors import InvalidInput

MAX_UPLOAD_BYTES = 5_000_000
GRID = 4
_ROWS = ("top", "upper middle", "lower middle", "bottom")
_COLS = ("left", "centre left", "centre right", "right")


def image_input(signature) -> tuple[int, int, bool] | None:
    """(height, width, channels_first) when the model takes one RGB picture tensor, else None."""
    inputs = signature.inputs if signature is not None else None
    if inputs is None or not inputs.is_tensor_spec() or len(inputs.inputs) != 1:
        return None
    shape = tuple(inputs.inputs[0].shape)
    if len(shape) == 4 and shape[1] == 3 and shape[2] > 0 and shape[3] > 0:
        return int(shape[2]), int(shape[3]), True
    if len(shape) == 4 and shape[3] == 3 and shape[1] > 0 and shape[2] > 0:
        return int(shape[1]), int(shape[2]), False
    return None


def read_upload(data: bytes, height: int, width: int) -> np.ndarray:
    """The picture as float32 HWC in [0, 1]: RGB, centre-cropped to a square, resized (box filter)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InvalidInput("please choose a picture to upload")
    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidInput(f"the picture is over {MAX_UPLOAD_BYTES // 1_000_000} MB")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidInput("the upload is not a picture (PNG, JPEG, BMP, GIF or WebP)") from None
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((width, height), Image.BOX)
    return np.asarray(image, dtype=np.float32) / 255.0


def preview(picture: np.ndarray) -> str:
    """A ``data:`` URI of the picture the model saw (PNG), for the page."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.clip(picture, 0, 1) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _answers(output):
    """Labels, and class probabilities (``p_<class>`` columns) when the model gives them."""
    import pandas as pd

    from registry import predicted_labels

    labels = [str(x) for x in predicted_labels(output)]
    if isinstance(output, pd.DataFrame):
        columns = [c for c in output.columns if label_of_column(c) is not None]
        if columns:
            return labels, output[columns].rename(columns=label_of_column)
    return labels, None


def explain_picture(model, picture: np.ndarray, channels_first: bool, name: str, version: str) -> dict:
    """The answer for one picture (HWC in [0, 1]) and each region's weight, as the try-it page shows."""
    height, width, _ = picture.shape
    mean = picture.reshape(-1, 3).mean(axis=0)
    batch = [picture]
    rows = np.array_split(np.arange(height), GRID)
    cols = np.array_split(np.arange(width), GRID)
    for r in rows:
        for c in cols:
            hidden = picture.copy()
            hidden[r[0]:r[-1] + 1, c[0]:c[-1] + 1] = mean
            batch.append(hidden)
    tensor = np.stack(batch).astype(np.float32)
    if channels_first:
        tensor = np.ascontiguousarray(tensor.transpose(0, 3, 1, 2))
    labels, probabilities = _answers(model.predict(tensor))
    answer = labels[0]
    contributions = []
    if probabilities is not None and answer in probabilities.columns:
        p = probabilities[answer].to_numpy(float)
        weights = p[0] - p[1:]
        regions = [f"{_ROWS[i]}, {_COLS[j]} of the picture" for i in range(GRID) for j in range(GRID)]
        contributions = sorted(({"feature": region, "weight": float(w)} for region, w in zip(regions, weights)),
                               key=lambda c: -abs(c["weight"]))
        best = max(contributions, key=lambda c: c["weight"])
        sentence = f"Answered '{answer}' (probability {p[0]:.2f})" + (
            f", resting most on the {best['feature']}: hiding it lowers that probability by {best['weight']:.2f}."
            if best["weight"] > 0 else "; hiding any one region of the picture does not lower it.")
    else:  # no probabilities: say which regions change the answer when hidden
        changed = [f"{_ROWS[i // GRID]}, {_COLS[i % GRID]}" for i, label in enumerate(labels[1:]) if label != answer]
        contributions = [{"feature": f"{region} of the picture", "weight": 1.0} for region in changed]
        sentence = f"Answered '{answer}'" + (f"; hiding the {changed[0]} of the picture changes it." if changed
                                             else "; hiding any one region leaves it unchanged.")
    shown = {}
    if probabilities is not None and answer in probabilities.columns:
        top = float(probabilities.iloc[0].max())
        shown = {"confidence": top, "band": band(top), "computed": "from the model's class probabilities"}
    return {"prediction": answer, "sentence": sentence, "contributions": contributions[:8],
            "method": f"region occlusion ({GRID} x {GRID} grid, hidden with the mean colour)",
            "model": {"name": name, "version": version}, "confidence_shown": shown}


def multipart_file(body: bytes, content_type: str, field: str) -> tuple[bytes, dict[str, str]]:
    """One uploaded file and the other (text) fields of a ``multipart/form-data`` body (stdlib parser)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    if "boundary=" not in content_type:
        raise InvalidInput("the form must be sent as multipart/form-data")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
                                                  + body)
    data, fields = b"", {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name == field:
            data = payload
        elif name:
            fields[str(name)] = payload.decode("utf-8", errors="replace")
    return data, fields


__all__ = ["explain_picture", "image_input", "multipart_file", "preview", "read_upload"]
