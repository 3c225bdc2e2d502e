"""A local stand-in for TF Serving's REST API, for machines without TF Serving or Docker.

Run by `make serve-local`:

    python -m serving.local_server --model-base serving/models/captioner --port 8501

It serves the pushed SavedModels (`<model-base>/<version>/`) over the same URLs, request
and response formats and error bodies as TF Serving's REST API (see serving/README.md for
what it leaves out), so the caption CLI, the web page and the tests work against either.
Stdlib HTTP server (one thread per connection); the model parts are serving/rest.py
(protocol), serving/versions.py (which versions are loaded) and serving/servable.py (TF).
"""

from __future__ import annotations

import argparse
import logging
import mimetypes
import signal
import sys
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Sequence
from urllib.parse import unquote, urlsplit

from serving import rest
from serving.rest import RestError
from serving.versions import DEFAULT_LABEL, ModelVersions

log = logging.getLogger("serving.local_server")

SERVING_DIR = Path(__file__).resolve().parent
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024  # read and drop at most this much of a refused body


class CaptionServer(ThreadingHTTPServer):
    """The HTTP server plus what the handlers share: the model's versions and the limits."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        versions: ModelVersions,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_batch_size: int = 256,
        static_dir: Path | None = None,
    ):
        super().__init__(address, Handler)
        self.versions = versions
        self.max_body_bytes = max_body_bytes
        self.max_batch_size = max_batch_size
        self.static_dir = Path(static_dir).resolve() if static_dir else None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server_version = "captioner-local-server/1"
    timeout = 120  # an idle keep-alive connection gives its thread back after this
    server: CaptionServer
    _drain = 0  # bytes of a refused body to read and drop after the response

    # A request line too broken to tell its HTTP version is answered as HTTP/1.0, with a status
    # line (http.server's default, 0.9, would send a bare body).
    default_request_version = "HTTP/1.0"

    # One access-log line per request, written by _handle; silence the default ones.
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, headers too long...): a JSON error body
        like every other answer, and a 4xx (not 505) for an HTTP version it cannot speak."""
        if code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:
            code = HTTPStatus.BAD_REQUEST
        self.close_connection = True
        self._respond(code, {"error": message or HTTPStatus(code).phrase}, {})
        log.info('%s "%s" %d', self.client_address[0], (getattr(self, "requestline", "") or "")[:200], code)

    def do_GET(self) -> None:
        if self.headers.get("Content-Length", "0").strip() not in ("", "0"):
            self.close_connection = True  # a GET body is never read: do not parse it as the next request
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _method_not_allowed(self) -> None:
        self._handle(self._refuse_method)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _method_not_allowed

    def _refuse_method(self):
        self.close_connection = True  # the body we did not read (or HEAD's unwanted answer) ends it
        raise RestError(405, f"Method {self.command} is not supported; use GET or POST")

    # ------------------------------------------------------------------------------------------

    def _handle(self, route) -> None:
        started = time.perf_counter()
        headers: dict[str, str] = {}
        try:
            status, body, headers = route()
        except RestError as error:
            status, body = error.status, {"error": error.message}
        except Exception as error:  # a bug or a TF failure: a 500 that says so, and keep serving
            log.exception("%s %s failed", self.command, self.path)
            status, body = 500, {"error": f"internal error: {type(error).__name__}: {error}"}
        self._respond(status, body, headers)
        log.info(
            '%s "%s %s" %d %.1f ms',
            self.client_address[0], self.command, self.path, status, (time.perf_counter() - started) * 1000,
        )

    def _respond(self, status: int, body, headers: dict[str, str]) -> None:
        if isinstance(body, (bytes, bytearray)):
            payload, content_type = bytes(body), headers.pop("Content-Type", "application/octet-stream")
        else:
            payload, content_type = rest.dumps(body), "application/json"
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away; nothing to tell it
        if self._drain:
            self._drain_body(self._drain)

    def _drain_body(self, length: int) -> None:
        """Reads and drops a refused body, so the client can finish sending and read our answer."""
        self._drain = 0
        try:
            self.connection.settimeout(5)
            remaining = min(length, DRAIN_LIMIT_BYTES)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    # ------------------------------------------------------------------------------------------
    # GET: model status, metadata, the web page

    def _get(self):
        path = urlsplit(self.path).path
        route = rest.parse_route(path)
        if route is None:
            return self._static(path)
        if route.verb is not None:
            raise RestError(405, f"GET {path}: use POST for :{route.verb}")
        versions = self.server.versions
        self._check_model(route.model, status_request=True)
        if route.metadata:
            servable = versions.servable(route.version, route.label)
            return 200, servable.metadata(versions.name), {"X-Model-Version": str(servable.version)}
        return 200, versions.status(route.version, route.label), {}

    def _static(self, path: str):
        root = self.server.static_dir
        if root is None:
            raise RestError(404, f"Malformed request: GET {path}")
        relative = unquote(path).lstrip("/") or "index.html"
        target = (root / relative).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(root) or not target.is_file():
            raise RestError(404, f"Not found: GET {path}")
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return 200, target.read_bytes(), {"Content-Type": content_type, "Cache-Control": "no-cache"}

    # ------------------------------------------------------------------------------------------
    # POST: predict

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise RestError(411, "Length Required: send the body with a Content-Length (chunked bodies are not supported)")
        raw_length = self.headers.get("Content-Length", "0").strip() or "0"
        if not raw_length.isdigit():
            self.close_connection = True
            raise RestError(400, f"Invalid Content-Length: {raw_length!r}")
        length = int(raw_length)
        limit = self.server.max_body_bytes
        if length > limit:
            self.close_connection = True
            self._drain = length  # after the 413 is sent
            raise RestError(413, f"Request body of {length} bytes is over the limit of {limit} bytes; send fewer or smaller images per request")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise RestError(400, f"Request body ended after {len(body)} of {length} bytes")
        return body

    def _post(self):
        body = self._read_body()  # first, so the connection stays in step whatever comes next
        path = urlsplit(self.path).path
        route = rest.parse_route(path)
        if route is None:
            raise RestError(404, f"Malformed request: POST {path}")
        if route.verb is None or route.metadata:
            raise RestError(405, f"POST {path}: use GET for model status and metadata, POST for :predict")
        if route.verb in ("classify", "regress"):
            self._check_model(route.model)
            raise RestError(400, f"{route.verb} is not supported: this model has predict signatures only; use :predict")
        if route.verb != "predict":
            raise RestError(404, f"Malformed request: POST {path}")
        self._check_model(route.model)
        servable = self.server.versions.servable(route.version, route.label)
        request = rest.parse_predict(body, servable.input_names)
        batch = max(len(values) for values in request.inputs.values())
        if batch > self.server.max_batch_size:
            raise RestError(400, f"Batch of {batch} instances is over the limit of {self.server.max_batch_size}; split it")
        outputs = servable.predict(request.signature_name, request.inputs)
        return 200, rest.format_predict_response(outputs, request.format), {"X-Model-Version": str(servable.version)}

    def _check_model(self, model: str, status_request: bool = False) -> None:
        if model != self.server.versions.name:
            if status_request:
                raise RestError(404, f"Could not find any versions of model {model}")
            raise RestError(404, f"Servable not found for request: Latest({model})")


# ----------------------------------------------------------------------------------------------


def parse_label(text: str) -> tuple[str, int]:
    name, sep, version = text.partition("=")
    if not sep or not name or not version.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=VERSION (e.g. stable=3), got {text!r}")
    return name, int(version)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.local_server",
        description="Serve the pushed caption SavedModels over TF Serving's REST API (a local stand-in for TF Serving).",
    )
    parser.add_argument("--model-base", type=Path, default=Path("serving/models/captioner"),
                        help="directory of numeric version subdirectories (default serving/models/captioner)")
    parser.add_argument("--model-name", default="captioner", help="the model name in URLs (default captioner)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8501, help="port (default 8501, TF Serving's REST port)")
    parser.add_argument("--num-versions", type=int, default=1,
                        help="how many of the newest versions to keep loaded (default 1, like TF Serving's latest policy)")
    parser.add_argument("--label", type=parse_label, action="append", default=[], metavar="NAME=VERSION",
                        help=f"a version label; pins that version loaded. '{DEFAULT_LABEL}' names the newest version unless set")
    parser.add_argument("--poll-seconds", type=float, default=2.0, help="how often to look for new versions (default 2)")
    parser.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_BYTES / 2**20,
                        help="refuse request bodies over this size with 413 (default 10)")
    parser.add_argument("--max-batch-size", type=int, default=256, help="refuse larger batches with 400 (default 256)")
    parser.add_argument("--static-dir", type=Path, default=SERVING_DIR / "web",
                        help="web page served at / (default serving/web; GET / answers 404 when it is missing)")
    parser.add_argument("--no-warmup", action="store_true", help="do not call each signature once after loading")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser


def make_server(args: argparse.Namespace) -> CaptionServer:
    """Builds the server and starts watching the model base (loading happens in the background)."""
    def load(version: int, path: Path):
        # TensorFlow is imported by the first load, in the watcher thread: the server listens
        # (and answers status LOADING) at once instead of after TensorFlow's start-up.
        from serving.servable import Servable

        return Servable(version, path, warmup=not args.no_warmup)

    versions = ModelVersions(
        name=args.model_name,
        base_dir=args.model_base.resolve(),
        loader=load,
        num_versions=args.num_versions,
        labels=dict(args.label),
        poll_seconds=args.poll_seconds,
    )
    static_dir = args.static_dir if args.static_dir and args.static_dir.is_dir() else None
    server = CaptionServer(
        (args.host, args.port), versions,
        max_body_bytes=int(args.max_body_mb * 2**20), max_batch_size=args.max_batch_size, static_dir=static_dir,
    )
    versions.start()
    return server


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the server like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        server = make_server(args)
    except OSError as error:
        print(f"error: cannot listen on {args.host}:{args.port}: {error.strerror} "
              f"(is another server on that port? pick one with --port)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    log.info("serving model %s from %s on %s/v1/models/%s", args.model_name, args.model_base, server.url, args.model_name)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("shutting down")
    finally:
        server.server_close()
        server.versions.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
