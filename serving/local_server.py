"""A local stand-in for TF Serving's REST API, for machines without TF Serving or Docker.

Run by `make serve-local`:

    python -m serving.local_server --model-base serving/models/captioner --port 8501

It serves the pushed SavedModels (`<model-base>/<version>/`) over the same URLs, request
and response formats and error bodies as TF Serving's REST API (see serving/README.md for
what it leaves out), so the caption CLI, the web page and the tests work against either.
Stdlib HTTP server: one thread per connection, at most --max-connections of them, each cut
off when its headers or body do not arrive in time; the model parts are serving/rest.py
(protocol), serving/versions.py (which versions are loaded) and serving/servable.py (TF).
With --enable-batching, concurrent requests are joined into graph calls by serving/batching.py,
with the settings of TF Serving's batching parameters file (serving/batching_parameters.py).
"""

from __future__ import annotations

import argparse
import logging
import math
import mimetypes
import re
import signal
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Sequence
from urllib.parse import unquote, urlsplit

from serving import batching_parameters, rest
from serving.batching import BatchScheduler, Job
from serving.batching_parameters import BatchingParameters
from serving.rest import DEFAULT_MAX_BODY_BYTES, RestError
from serving.versions import DEFAULT_LABEL, ModelVersions

log = logging.getLogger("serving.local_server")

SERVING_DIR = Path(__file__).resolve().parent
MODEL_CARD_PATH = "/model-card.json"  # the card of the default version (the local server only)
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024  # read and drop at most this much of a refused body
DEFAULT_HEADER_TIMEOUT = 30.0  # seconds for a request's line and headers (and for an idle keep-alive)
DEFAULT_BODY_TIMEOUT = 60.0  # seconds for a whole request body
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_MAX_EXECUTION_BATCH_SIZE = 32
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")  # ASCII digits only: "²".isdigit() is True
# What a browser's preflight learns when --enable-cors-support is on.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
}


class CaptionServer(ThreadingHTTPServer):
    """The HTTP server plus what the handlers share: the model's versions and the limits.

    At most max_connections connections are served at once; one more is answered 503 and
    closed at once, so slow clients cannot take every thread.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        versions: ModelVersions,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_batch_size: int = 256,
        max_execution_batch_size: int | None = DEFAULT_MAX_EXECUTION_BATCH_SIZE,
        static_dir: Path | None = None,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        cors: bool = False,
        batching: BatchingParameters | None = None,
    ):
        super().__init__(address, Handler)
        self.versions = versions
        self.max_body_bytes = max_body_bytes
        self.max_batch_size = max_batch_size
        self.max_execution_batch_size = max_execution_batch_size
        self.static_dir = Path(static_dir).resolve() if static_dir else None
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self.cors = cors
        self.batcher = BatchScheduler(batching) if batching is not None else None
        self._slots = threading.BoundedSemaphore(max_connections)

    def server_close(self) -> None:
        super().server_close()
        if self.batcher is not None:
            self.batcher.stop()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse_busy(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse_busy(self, request: socket.socket, client_address) -> None:
        body = rest.dumps({"error": f"Too many connections (limit {self.max_connections}); try again later"})
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
        )
        try:
            request.settimeout(1)
            request.sendall(head.encode("ascii") + body)
        except OSError:
            pass
        log.warning("%s refused: %d connections open", client_address[0], self.max_connections)
        self.shutdown_request(request)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server_version = "captioner-local-server/1"
    server: CaptionServer
    _drain = 0  # bytes of a refused body to read and drop after the response
    _note = ""  # how a predict request was batched, for its access-log line
    _timed_out = False  # the header deadline passed: the read side was shut

    # A request line too broken to tell its HTTP version is answered as HTTP/1.0, with a status
    # line (http.server's default, 0.9, would send a bare body).
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        self.timeout = self.server.header_timeout  # per read, until handle_one_request sets deadlines
        super().setup()

    # One access-log line per request, written by _handle; silence the default ones.
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s " + format, self.address_string(), *args)

    # ------------------------------------------------------------------------------------------
    # Deadlines: the request line and headers must arrive within header_timeout of the
    # connection becoming idle; a client that trickles bytes is cut off all the same.

    def handle_one_request(self) -> None:
        self._timed_out = False
        self.connection.settimeout(self.server.header_timeout)
        timer = threading.Timer(self.server.header_timeout, self._header_deadline)
        timer.daemon = True
        self._header_timer = timer
        timer.start()
        try:
            super().handle_one_request()
        finally:
            timer.cancel()

    def _header_deadline(self) -> None:
        self._timed_out = True
        try:
            self.connection.shutdown(socket.SHUT_RD)  # the blocked read returns at once
        except OSError:
            pass

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self._header_timer.cancel()
        if parsed and self._timed_out:
            self.send_error(HTTPStatus.REQUEST_TIMEOUT)
            return False
        return parsed

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, headers too long...): a JSON error body
        like every other answer, never a 5xx for what the client sent."""
        path = urlsplit(getattr(self, "path", "") or "").path
        if self._timed_out:
            code, message = HTTPStatus.REQUEST_TIMEOUT, f"Request Timeout: headers not received within {self.server.header_timeout:g} s"
        elif code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:
            code = HTTPStatus.BAD_REQUEST
        elif code == HTTPStatus.NOT_IMPLEMENTED:  # a method http.server has no do_ for
            error = self._unknown_method(path)
            code, message = error.status, error.message
        self.close_connection = True
        self._respond(code, {"error": message or HTTPStatus(code).phrase}, {})
        log.info('%s "%s" %d', self.client_address[0], (getattr(self, "requestline", "") or "")[:200], code)

    def _unknown_method(self, path: str) -> RestError:
        if rest.is_api_path(path):
            return rest.malformed(self.command, path)
        return RestError(405, f"Method {self.command} is not supported; use GET or POST")

    # ------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_HEAD(self) -> None:
        self._handle(self._get, head=True)

    def do_POST(self) -> None:
        self._handle(self._post)

    def do_OPTIONS(self) -> None:
        self._handle(self._options)

    def _other_method(self) -> None:
        self._handle(self._refuse_method)

    do_PUT = do_DELETE = do_PATCH = _other_method

    def _refuse_method(self):
        self._skip_body()
        raise self._unknown_method(urlsplit(self.path).path)

    def _options(self):
        self._skip_body()
        if not self.server.cors:
            raise self._unknown_method(urlsplit(self.path).path)
        return 204, b"", {"Access-Control-Max-Age": "600"}

    def _handle(self, route, head: bool = False) -> None:
        started = time.perf_counter()
        headers: dict[str, str] = {}
        try:
            status, body, headers = route()
        except RestError as error:
            status, body = error.status, {"error": error.message}
        except Exception as error:  # a bug or a TF failure: a 500 that says so (no details), and keep serving
            log.exception("%s %s failed", self.command, self.path[:200])
            status, body = 500, {"error": f"Internal error ({type(error).__name__}); the server log has the details"}
        self._respond(status, body, headers, head=head)
        log.info(
            '%s "%s %s" %d %.1f ms%s',
            self.client_address[0], self.command, self.path[:200], status, (time.perf_counter() - started) * 1000, self._note,
        )
        self._note = ""

    def _respond(self, status: int, body, headers: dict[str, str], head: bool = False) -> None:
        if isinstance(body, (bytes, bytearray)):
            payload, content_type = bytes(body), headers.pop("Content-Type", "application/octet-stream")
        else:
            payload, content_type = rest.dumps(body), "application/json"
        if self.server.cors:
            headers = {**CORS_HEADERS, **headers}
        try:
            self.connection.settimeout(self.server.body_timeout)  # a client that does not read is cut off
            self.send_response(status)
            if status != 204:
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not head and status != 204:
                self.wfile.write(payload)
        except OSError:  # the client went away or stopped reading; nothing to tell it
            self.close_connection = True
        if self._drain:
            self._drain_body(self._drain)

    def _drain_body(self, length: int) -> None:
        """Reads and drops a refused body, so the client can finish sending and read our answer."""
        self._drain = 0
        try:
            self.connection.settimeout(5)
            remaining = min(length, DRAIN_LIMIT_BYTES)
            while remaining > 0:
                chunk = self.rfile.read1(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    # ------------------------------------------------------------------------------------------
    # Request framing: one Content-Length, ASCII digits, no chunked bodies

    def _content_length(self) -> int:
        """The declared body length; 400/411 (closing the connection) when it cannot be trusted."""
        if self.headers.get("Transfer-Encoding") is not None:
            self.close_connection = True
            raise RestError(411, "Length Required: send the body with a Content-Length (chunked bodies are not supported)")
        values = {value.strip() for value in self.headers.get_all("Content-Length") or []}
        if len(values) > 1:
            self.close_connection = True  # where this body ends is ambiguous: never read on
            raise RestError(400, f"Conflicting Content-Length headers: {', '.join(sorted(repr(v) for v in values))[:200]}")
        raw = values.pop() if values else "0"
        if not _CONTENT_LENGTH.fullmatch(raw):
            self.close_connection = True
            raise RestError(400, f"Invalid Content-Length: {raw[:40]!r}")
        return int(raw)

    def _skip_body(self) -> None:
        """A method that takes no body: a declared one is not read, so the connection ends with the answer."""
        if self._content_length():
            self.close_connection = True

    def _read_body(self) -> bytes:
        length = self._content_length()
        limit = self.server.max_body_bytes
        if length > limit:
            self.close_connection = True
            self._drain = length  # after the 413 is sent
            raise RestError(413, f"Request body of {length} bytes is over the limit of {limit} bytes; send fewer or smaller images per request")
        deadline = time.monotonic() + self.server.body_timeout
        chunks, received = [], 0
        while received < length:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                self.connection.settimeout(remaining)
                chunk = self.rfile.read1(min(length - received, 1 << 16))
            except TimeoutError:
                self.close_connection = True
                raise RestError(
                    408, f"Request Timeout: {received} of {length} body bytes arrived in {self.server.body_timeout:g} s"
                ) from None
            if not chunk:
                self.close_connection = True
                raise RestError(400, f"Request body ended after {received} of {length} bytes")
            chunks.append(chunk)
            received += len(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------------------------------
    # GET: model status, metadata, the web page

    def _get(self):
        self._skip_body()
        path = urlsplit(self.path).path
        if path == MODEL_CARD_PATH:
            return self._model_card()
        if not rest.is_api_path(path):
            return self._static(path)
        route = rest.parse_route(path)
        if route is None or route.verb is not None or self.command != "GET":
            raise rest.malformed(self.command, path)  # HEAD too: TF Serving's API knows GET and POST
        if not route.model:
            raise RestError(400, "Missing model name in request.")
        versions = self.server.versions
        self._check_model(route.model, status_request=True)
        if route.metadata:
            servable = versions.servable(route.version, route.label)
            return 200, servable.metadata(versions.name), {"X-Model-Version": str(servable.version)}
        return 200, versions.status(route.version, route.label), {}

    def _model_card(self):
        """The card of the version served by default (not part of TF Serving's API: 404 there)."""
        servable = self.server.versions.servable(None, None)
        card = servable.model_card()
        if card is None:
            raise RestError(404, f"version {servable.version} has no model card (it was not pushed by the pipeline)")
        return 200, {"version": servable.version, **card}, {"X-Model-Version": str(servable.version)}

    def _static(self, path: str):
        root = self.server.static_dir
        shown = f"{self.command} {path[:200]}"
        if root is None:
            raise RestError(404, f"Not found: {shown}")
        relative = unquote(path).lstrip("/") or "index.html"
        if any(ord(c) < 32 for c in relative):  # NUL and other control characters name no file here
            raise RestError(404, f"Not found: {shown}")
        try:
            target = (root / relative).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_relative_to(root) or not target.is_file():
                raise RestError(404, f"Not found: {shown}")
            data = target.read_bytes()
        except (OSError, ValueError):  # a name too long for the file system, and the like
            raise RestError(404, f"Not found: {shown}") from None
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return 200, data, {"Content-Type": content_type, "Cache-Control": "no-cache"}

    # ------------------------------------------------------------------------------------------
    # POST: predict

    def _post(self):
        body = self._read_body()  # first, so the connection stays in step whatever comes next
        path = urlsplit(self.path).path
        if not rest.is_api_path(path):
            raise RestError(404, f"Not found: POST {path[:200]}")
        route = rest.parse_route(path)
        if route is None or not route.model or route.verb not in rest.VERBS:
            raise rest.malformed("POST", path)
        if route.verb in ("classify", "regress"):
            self._check_model(route.model)
            raise RestError(400, f"{route.verb} is not supported: this model has predict signatures only; use :predict")
        self._check_model(route.model)
        servable = self.server.versions.servable(route.version, route.label)
        request = rest.parse_predict(body, servable.input_names)
        batch = max(len(values) for values in request.inputs.values())
        if batch > self.server.max_batch_size:
            raise RestError(400, f"Batch of {batch} instances is over the limit of {self.server.max_batch_size}; split it")
        if self.server.batcher is None:
            outputs = servable.predict(request.signature_name, request.inputs, self.server.max_execution_batch_size)
        else:
            outputs = self._predict_batched(servable, request, batch)
        return 200, rest.format_predict_response(outputs, request.format), {"X-Model-Version": str(servable.version)}

    def _predict_batched(self, servable, request: rest.PredictRequest, batch: int):
        """A request that fits a batch joins the queue of its version and signature; a larger one
        runs on its own (TF Serving's large-batch splitting), or is refused as TF Serving refuses it."""
        params = self.server.batcher.params
        step = self.server.max_execution_batch_size
        if batch > params.execution_batch_size:
            if batch > params.max_batch_size:
                raise RestError(400, f"Task size {batch} is larger than maximum input batch size {params.max_batch_size}")
            self._note = f" (on its own: over the batch size {params.execution_batch_size})"
            return servable.predict(request.signature_name, request.inputs, min(step or batch, params.execution_batch_size))
        name = request.signature_name
        job = Job(
            key=(servable, name),
            execute=lambda inputs: servable.predict(name, inputs, step),
            split=lambda outputs, sizes: servable.split_outputs(name, outputs, sizes),
        )
        served = self.server.batcher.submit(job, request.inputs)
        self._note = (f" (batch of {served.batch_images} image(s) from {served.batch_requests} request(s), "
                      f"queued {served.queued_seconds * 1000:.1f} ms)")
        return served.outputs

    def _check_model(self, model: str, status_request: bool = False) -> None:
        if model != self.server.versions.name:
            if status_request:
                raise RestError(404, f"Could not find any versions of model {model}")
            raise RestError(404, f"Servable not found for request: Latest({model})")


# ----------------------------------------------------------------------------------------------


def parse_label(text: str) -> tuple[str, int]:
    name, sep, version = text.partition("=")
    if not sep or not name or not _CONTENT_LENGTH.fullmatch(version):
        raise argparse.ArgumentTypeError(f"expected NAME=VERSION (e.g. stable=3), got {text!r}")
    return name, int(version)


def _number(kind: type, low: float, text: str, high: float = math.inf, name: str = "a number"):
    """An argparse type: `kind(text)` within [low, high], else a one-line error."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
    if not (low <= value <= high) or (kind is float and not math.isfinite(value)):
        upper = "" if high == math.inf else f" and at most {high:g}"
        raise argparse.ArgumentTypeError(f"must be at least {low:g}{upper}, got {text!r}")
    return value


def port(text: str) -> int:
    return _number(int, 0, text, 65535, "a port number")  # 0: any free port


def count(text: str) -> int:
    return _number(int, 1, text, name="a whole number")


def seconds(text: str) -> float:
    value = _number(float, 0.0, text, name="a number of seconds")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def megabytes(text: str) -> float:
    value = _number(float, 0.0, text, name="a size in MB")
    if value * 2**20 < 1:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def batching_file(text: str) -> BatchingParameters:
    try:
        return batching_parameters.read(Path(text))
    except batching_parameters.BatchingConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options, checked together: a batching file without --enable-batching is a mistake."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batching_parameters_file is not None and not args.enable_batching:
        parser.error("--batching-parameters-file needs --enable-batching (as in TF Serving, the file alone batches nothing)")
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.local_server",
        description="Serve the pushed caption SavedModels over TF Serving's REST API (a local stand-in for TF Serving).",
    )
    parser.add_argument("--model-base", type=Path, default=Path("serving/models/captioner"),
                        help="directory of numeric version subdirectories (default serving/models/captioner)")
    parser.add_argument("--model-name", default="captioner", help="the model name in URLs (default captioner)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=port, default=8501, help="port (default 8501, TF Serving's REST port; 0: any free one)")
    parser.add_argument("--num-versions", type=count, default=1,
                        help="how many of the newest versions to keep loaded (default 1, like TF Serving's latest policy)")
    parser.add_argument("--label", type=parse_label, action="append", default=[], metavar="NAME=VERSION",
                        help=f"a version label; pins that version loaded. '{DEFAULT_LABEL}' names the newest version unless set")
    parser.add_argument("--poll-seconds", type=seconds, default=2.0, help="how often to look for new versions (default 2)")
    parser.add_argument("--max-body-mb", type=megabytes, default=DEFAULT_MAX_BODY_BYTES / 2**20,
                        help="refuse request bodies over this size with 413 (default 10)")
    parser.add_argument("--max-batch-size", type=count, default=256, help="refuse larger batches with 400 (default 256)")
    parser.add_argument("--max-execution-batch-size", type=count, default=DEFAULT_MAX_EXECUTION_BATCH_SIZE,
                        help=f"run larger batches as graph calls of at most this many images, so a big batch "
                             f"costs the memory of one call (default {DEFAULT_MAX_EXECUTION_BATCH_SIZE}; TF Serving's "
                             f"max_execution_batch_size with enable_large_batch_splitting)")
    parser.add_argument("--enable-batching", action="store_true",
                        help="join concurrent requests for the same version and signature into one graph call "
                             "(TF Serving's --enable_batching); settings from --batching-parameters-file, else "
                             "TF Serving's defaults")
    parser.add_argument("--batching-parameters-file", type=batching_file, default=None, metavar="FILE",
                        help="text-format BatchingParameters, the file TF Serving reads (e.g. serving/batching.config); "
                             "needs --enable-batching")
    parser.add_argument("--header-timeout", type=seconds, default=DEFAULT_HEADER_TIMEOUT,
                        help=f"seconds for a request's line and headers, and for an idle keep-alive connection "
                             f"(default {DEFAULT_HEADER_TIMEOUT:g}); slower clients are cut off")
    parser.add_argument("--body-timeout", type=seconds, default=DEFAULT_BODY_TIMEOUT,
                        help=f"seconds for a whole request body (default {DEFAULT_BODY_TIMEOUT:g}); then 408")
    parser.add_argument("--max-connections", type=count, default=DEFAULT_MAX_CONNECTIONS,
                        help=f"connections served at once (default {DEFAULT_MAX_CONNECTIONS}); one more gets 503")
    parser.add_argument("--enable-cors-support", action="store_true",
                        help="answer browsers from any origin: CORS headers and preflight (TF Serving's "
                             "--rest_api_enable_cors_support)")
    parser.add_argument("--static-dir", type=Path, default=SERVING_DIR / "web",
                        help="web page served at / (default serving/web; GET / answers 404 when it is missing)")
    parser.add_argument("--no-warmup", action="store_true", help="do not call each signature once after loading")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="logging level (default INFO)")
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
        max_body_bytes=int(args.max_body_mb * 2**20), max_batch_size=args.max_batch_size,
        max_execution_batch_size=args.max_execution_batch_size, static_dir=static_dir,
        header_timeout=args.header_timeout, body_timeout=args.body_timeout,
        max_connections=args.max_connections, cors=args.enable_cors_support,
        batching=(args.batching_parameters_file or BatchingParameters()) if args.enable_batching else None,
    )
    if server.batcher is not None:
        log.info("batching: %s", server.batcher.params.describe())
    versions.start()
    return server


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the server like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        server = make_server(args)
    except OSError as error:  # port taken, or a host name that does not resolve
        print(f"error: cannot listen on {args.host}:{args.port}: {error.strerror or error} "
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
