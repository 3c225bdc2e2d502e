"""TF Serving's REST protocol for one model: URL routing, predict request parsing, JSON output.

Called by serving/local_server.py; pure Python (no TensorFlow), so it is unit-tested on its
own. It follows TF Serving's json_tensor.cc for the parts this model uses: the row format
(`instances`) and the columnar format (`inputs`), `{"b64": ...}` binary values, and the
response shapes (`predictions` / `outputs`; a single output tensor is given without its
name). Every client mistake becomes a `RestError` with TF Serving's status code, and its
message where TF Serving has one (its http_rest_api_handler.cc and json_tensor.cc).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import re
from typing import Any, Callable, Mapping, Sequence

ROW = "row"
COLUMNAR = "columnar"
DEFAULT_SIGNATURE = "serving_default"
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024  # the local server's default request-size limit
VERBS = ("predict", "classify", "regress")
_MAX_INT64 = 2**63 - 1

# TF Serving matches its URL patterns case-insensitively ((?i) in its regexes); the model
# name, label and verb keep their case (`:PREDICT` is not a verb there either).
_API_PREFIX = re.compile(r"^/v1(?:/|$)", re.IGNORECASE)
_MODEL_URL = re.compile(
    r"^/v1/models(?:/(?P<model>[^/:]+))?"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>[^/:]*)|/(?P<metadata>metadata))?$",
    re.IGNORECASE,
)


class RestError(Exception):
    """A request the server refuses: HTTP status and the text of TF Serving's `{"error": ...}` body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True)
class Route:
    """What a /v1/models/... URL asks for."""

    model: str  # "" for /v1/models itself (TF Serving: "Missing model name in request.")
    version: int | None = None
    label: str | None = None
    verb: str | None = None  # "predict", "classify", "regress" (POST)
    metadata: bool = False


def is_api_path(path: str) -> bool:
    """A /v1/... path: TF Serving's REST handler answers it (anything else is not its business)."""
    return bool(_API_PREFIX.match(path))


def malformed(method: str, path: str) -> RestError:
    """TF Serving's answer to a /v1/ request that matches none of its URL patterns."""
    return RestError(400, f"Malformed request: {method} {_clip(path)}")


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_route(path: str) -> Route | None:
    """The Route of a /v1/models path, or None when the path is not one."""
    match = _MODEL_URL.match(path)
    if not match:
        return None
    version = match["version"]
    if version is not None and int(version) > _MAX_INT64:
        raise RestError(400, f"Failed to convert version: {_clip(version)} to numeric.")
    return Route(
        model=match["model"] or "",
        version=int(version) if version is not None else None,
        label=match["label"],
        verb=match["verb"],
        metadata=bool(match["metadata"]),
    )


@dataclasses.dataclass(frozen=True)
class PredictRequest:
    signature_name: str
    format: str  # ROW or COLUMNAR
    inputs: dict[str, list[bytes]]  # input name -> a batch of byte strings


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_b64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_b64(text: str) -> bytes:
    """Standard base64 (padding optional), or its URL-safe variant, as TF Serving accepts;
    any other character (bar whitespace) is an error, never silently dropped."""
    cleaned = "".join(text.split())
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        if "-" in cleaned or "_" in cleaned:
            return base64.b64decode(cleaned.encode("ascii"), altchars=b"-_", validate=True)
        return base64.b64decode(cleaned.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as error:
        raise RestError(400, f"Unable to base64 decode: {error}") from None


def _scalar_bytes(value: Any, where: str) -> bytes:
    """One DT_STRING element: {"b64": ...} or a plain JSON string (its UTF-8 bytes)."""
    if _is_b64_object(value):
        return decode_b64(value["b64"])
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict):
        raise RestError(400, f"{where}: JSON Value: {_short(value)} not formatted correctly for base64 data")
    raise RestError(400, f"{where}: JSON Value: {_short(value)} is not of expected type: DT_STRING")


def _vector_bytes(value: Any, where: str) -> list[bytes]:
    """A DT_STRING [None] tensor given as a JSON list (a lone value is a batch of one)."""
    if not isinstance(value, list):
        return [_scalar_bytes(value, where)]
    return [_scalar_bytes(item, f"{where} element {i}") for i, item in enumerate(value)]


def parse_json(body: bytes) -> dict:
    if not body.strip():
        raise RestError(400, "JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as error:
        raise RestError(400, f"JSON Parse error: the body is not UTF-8 ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise RestError(400, f"JSON Parse error: {error.msg} at offset: {error.pos}") from None
    except RecursionError:
        raise RestError(400, "JSON Parse error: the document is nested too deeply") from None
    if _has_lone_surrogate(doc):
        # "\ud800" parses in Python but is no Unicode text; RapidJSON (TF Serving) refuses it.
        raise RestError(400, "JSON Parse error: The surrogate pair in string is invalid.")
    if not isinstance(doc, dict):
        raise RestError(400, f"JSON Value: {_short(doc)} Is not object")
    return doc


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a string (or key) with an unpaired surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_predict(body: bytes, signature_inputs: Callable[[str], Sequence[str]]) -> PredictRequest:
    """Parses a :predict body. `signature_inputs(name)` gives the input names of a signature
    (and raises RestError when the model has no such signature)."""
    doc = parse_json(body)
    signature_name = doc.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature_name, str):
        raise RestError(400, "'signature_name' key must be a string value.")
    signature_name = signature_name or DEFAULT_SIGNATURE
    names = list(signature_inputs(signature_name))
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise RestError(400, "Not formatted correctly: expecting only one of 'inputs' or 'instances' keys to exist")
    if has_instances:
        return PredictRequest(signature_name, ROW, _parse_instances(doc["instances"], names))
    if has_inputs:
        return PredictRequest(signature_name, COLUMNAR, _parse_inputs(doc["inputs"], names))
    unknown = sorted(set(doc) - {"signature_name"})
    hint = f" (got {', '.join(repr(k) for k in unknown)})" if unknown else ""
    raise RestError(400, f"Missing 'inputs' or 'instances' key{hint}")


def _parse_instances(instances: Any, names: list[str]) -> dict[str, list[bytes]]:
    if not isinstance(instances, list):
        raise RestError(400, "Expecting 'instances' to be an list/array")
    if not instances:
        raise RestError(400, "No values in 'instances' array")

    def is_named(item: Any) -> bool:
        return isinstance(item, dict) and not _is_b64_object(item)

    named = is_named(instances[0])
    if not named and len(names) > 1:
        raise RestError(400, f"instances is a plain list, but expecting list of objects with keys: {','.join(names)}")
    columns: dict[str, list[bytes]] = {name: [] for name in names}
    for i, item in enumerate(instances):
        if named != is_named(item):
            kind = "object" if named else "value"
            raise RestError(400, f"Expecting {kind} at item {i} of 'instances' list, like item 0")
        if not named:
            columns[names[0]].append(_scalar_bytes(item, f"Failed to process element: {i} of 'instances' list"))
            continue
        if set(item) != set(names):
            unknown = sorted(set(item) - set(names))
            detail = f"does not have named input: {unknown[0]}; " if unknown else ""
            raise RestError(
                400,
                f"Failed to process element: {i} of 'instances' list. JSON object: {detail}"
                f"it must only have keys: {','.join(names)}",
            )
        for name in names:
            columns[name].append(_scalar_bytes(item[name], f"Failed to process element: {i} key: {name} of 'instances' list"))
    return columns


def _parse_inputs(inputs: Any, names: list[str]) -> dict[str, list[bytes]]:
    if isinstance(inputs, dict) and not _is_b64_object(inputs):
        missing = [name for name in names if name not in inputs]
        if missing:
            raise RestError(400, f"Missing named input: {missing[0]} in 'inputs' object (it has {','.join(sorted(inputs)) or 'no keys'})")
        columns = {name: _vector_bytes(inputs[name], f"'inputs' key {name}") for name in names}
    else:
        if len(names) > 1:
            raise RestError(400, "inputs is a plain value/list, but expecting an object as multiple input tensors are required")
        columns = {names[0]: _vector_bytes(inputs, "'inputs'")}
    for name, values in columns.items():
        if not values:
            raise RestError(400, f"No values in 'inputs' for {name}: the batch is empty")
    return columns


# ------------------------------------------------------------------------------------------
# Responses


def _json_value(value: Any, as_bytes: bool) -> Any:
    """A numpy/Python leaf or nested list -> JSON, strings as TF Serving writes them."""
    if isinstance(value, (list, tuple)):
        return [_json_value(v, as_bytes) for v in value]
    if getattr(value, "dtype", None) is not None and value.dtype.name == "float32":
        # float32 written with its shortest round-trip digits (-0.3734295, not -0.37342947721481323)
        return _float32_list(value.tolist())
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _json_value(value.tolist(), as_bytes)
    if isinstance(value, bytes):
        if not as_bytes:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass  # not text: fall back to the binary form rather than write invalid JSON
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return value  # json.dumps writes NaN / Infinity, as TF Serving does
    return value


def _float32_list(value: Any) -> Any:
    import numpy as np

    if isinstance(value, float):
        return float(repr(np.float32(value))) if math.isfinite(value) else value
    return [_float32_list(v) for v in value]


def format_predict_response(outputs: Mapping[str, Sequence[Any]], fmt: str) -> dict:
    """Output tensors (name -> batch-major values) -> TF Serving's predict response body."""
    names = sorted(outputs)
    values = {name: _json_value(outputs[name], name.endswith("_bytes")) for name in names}
    if fmt == COLUMNAR:
        return {"outputs": values[names[0]] if len(names) == 1 else values}
    batch = {len(v) for v in values.values()}
    if len(batch) != 1:
        raise ValueError(f"outputs have different batch sizes: {sorted(batch)}")
    if len(names) == 1:
        return {"predictions": values[names[0]]}
    return {"predictions": [{name: values[name][i] for name in names} for i in range(batch.pop())]}


def dumps(body: Any) -> bytes:
    """JSON as UTF-8; a lone surrogate (never valid UTF-8) is written as its \\u escape."""
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "backslashreplace")
