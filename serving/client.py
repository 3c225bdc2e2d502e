"""A small REST client for the caption model, for TF Serving or serving/local_server.py.

Called by serving/cli.py (the `caption` command) and usable from any Python code:

    from serving.client import CaptionClient
    client = CaptionClient("http://127.0.0.1:8501")
    client.caption([open("dog.jpg", "rb").read()])   # [{"caption": "a dog runs ...", "version": 3}]

Stdlib only (no TensorFlow): it posts TF Serving's row format with base64 image bytes.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import urllib.error
import urllib.request
from typing import Any, Sequence

from serving.rest import DEFAULT_MAX_BODY_BYTES

DEFAULT_URL = "http://127.0.0.1:8501"
# JSON around each image's base64 ({"b64": "..."}, ) and around the batch (generous).
_PER_IMAGE_BYTES = 16
_PER_REQUEST_BYTES = 128


def request_bytes(image_sizes: Sequence[int]) -> int:
    """An upper bound on the :predict body for images of these sizes (base64 in row format)."""
    return _PER_REQUEST_BYTES + sum(4 * math.ceil(size / 3) + _PER_IMAGE_BYTES for size in image_sizes)


class ServingError(Exception):
    """The server refused a request (status = its HTTP status) or could not be reached (status None)."""

    def __init__(self, message: str, status: int | None = None, url: str = ""):
        super().__init__(message)
        self.message = message
        self.status = status
        self.url = url

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


class ServerUnreachable(ServingError):
    """No answer at all: nothing listens at the URL, DNS failed, or the request timed out."""


class RequestTooLarge(ServingError):
    """Refused by the client itself: the body would be over the server's request-size limit."""


class CaptionClient:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        model: str = "captioner",
        version: int | None = None,
        label: str | None = None,
        timeout: float = 60.0,
        max_request_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ):
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        self.url = url.rstrip("/")
        self.model = model
        self.version = version
        self.label = label
        self.timeout = timeout
        self.max_request_bytes = max_request_bytes  # the server's limit (the local server's default)

    @property
    def model_url(self) -> str:
        """/v1/models/<model>[/versions/N | /labels/L]"""
        url = f"{self.url}/v1/models/{self.model}"
        if self.version is not None:
            url += f"/versions/{self.version}"
        elif self.label is not None:
            url += f"/labels/{self.label}"
        return url

    def caption(self, images: Sequence[bytes], signature: str | None = None) -> list[dict]:
        """Captions for encoded images (JPEG/PNG bytes), in order.

        Each result has `caption`; beam_search adds `alternatives` and `scores`; `version` is
        the model version that answered when the server says (the local server does) or the
        client can tell (a pinned version; otherwise the newest AVAILABLE one in the status).
        """
        size = request_bytes([len(image) for image in images])
        if size > self.max_request_bytes:
            raise RequestTooLarge(
                f"a request of about {size / 2**20:.1f} MB is over the server's limit of "
                f"{self.max_request_bytes / 2**20:g} MB", status=413, url=self.model_url,
            )
        body: dict[str, Any] = {"instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images]}
        if signature:
            body["signature_name"] = signature
        response, headers = self._request(f"{self.model_url}:predict", body)
        predictions = response.get("predictions")
        if not isinstance(predictions, list) or len(predictions) != len(images):
            raise ServingError(f"unexpected response from {self.url}: {str(response)[:200]}", url=self.url)
        version = headers.get("X-Model-Version") or self.version or self._status_version()
        results = []
        for prediction in predictions:
            # One output tensor comes back bare (TF Serving drops its name); several as an object.
            result = dict(prediction) if isinstance(prediction, dict) else {"caption": prediction}
            if version is not None:
                result["version"] = int(version)
            results.append(result)
        return results

    def status(self) -> dict:
        """GET /v1/models/<model>[...]: {"model_version_status": [...]}"""
        return self._request(self.model_url)[0]

    def metadata(self) -> dict:
        return self._request(f"{self.model_url}/metadata")[0]

    def _status_version(self) -> int | None:
        """The newest AVAILABLE version (what TF Serving's latest policy serves), when no header says."""
        if self.label is not None:
            return None
        try:
            states = self.status().get("model_version_status", [])
        except ServingError:
            return None
        available = [int(s["version"]) for s in states if s.get("state") == "AVAILABLE"]
        return max(available, default=None)

    def _request(self, url: str, body: dict | None = None) -> tuple[dict, Any]:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read()), response.headers
        except urllib.error.HTTPError as error:
            raise ServingError(_error_text(error), status=error.code, url=url) from None
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, (BrokenPipeError, ConnectionResetError)):
                # It answered the connection, then closed it on this request (too large, too slow):
                # a failure of this request, not a missing server.
                raise ServingError(f"the server at {self.url} closed the connection during the request ({reason.strerror})", url=url) from None
            reason = getattr(reason, "strerror", None) or reason  # "Connection refused", not "[Errno 111] ..."
            raise ServerUnreachable(f"cannot reach the caption server at {self.url} ({reason})", url=url) from None
        except json.JSONDecodeError as error:
            raise ServingError(f"the server at {self.url} did not answer JSON ({error})", url=url) from None


def _error_text(error: urllib.error.HTTPError) -> str:
    """TF Serving's {"error": "..."} text, or the raw body when it is not that."""
    raw = error.read().decode("utf-8", "replace")
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return raw.strip()[:300] or error.reason
