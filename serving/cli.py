"""The `caption` command: captions image files through the serving REST API.

Installed as a console script by `make install` (pyproject's [project.scripts]); also
`python -m serving.cli`. Talks to TF Serving or serving/local_server.py through
serving/client.py, in batches; a batch the server refuses is retried one file at a time,
so one bad file costs only its own result.

    caption photos/ extra.jpg 'shots/*.png'      # path<TAB>caption per image
    caption --json --beam photos/                # one JSON object per image
    curl -s https://example.org/a.jpg | caption -   # `-` reads one image from stdin
Exit status: 0 all captioned, 1 some files failed (each one named on stderr; a file too
large for the server's request limit is skipped without being sent), 2 no server answered
(or the model / version does not exist there).
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import json
import os
import sys
import time
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence, TextIO

from serving.client import DEFAULT_URL, CaptionClient, ServerUnreachable, ServingError, request_bytes
from serving.rest import DEFAULT_MAX_BODY_BYTES

# What a directory scan picks up: every format the exported graph decodes (tf.io.decode_image).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# `-` on the command line: one image read from standard input.
STDIN = Path("-")


class Fatal(Exception):
    """Nothing more can be captioned: no server, or no such model/version there."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caption",
        description="Caption images with the served caption model (TF Serving or `make serve-local`).",
        epilog="Exit status: 0 all captioned, 1 some files failed, 2 server unreachable or model/version not found.",
    )
    parser.add_argument("images", nargs="+", metavar="IMG",
                        help="image files, globs ('photos/*.jpg'), directories (searched recursively for "
                             + ", ".join(IMAGE_SUFFIXES) + "), or - for one image on stdin")
    parser.add_argument("--version", action="version", version=f"caption {tool_version()}",
                        help="print the tool's version and exit")
    parser.add_argument("--url", default=os.environ.get("CAPTIONER_URL", DEFAULT_URL),
                        help=f"server URL (default: $CAPTIONER_URL or {DEFAULT_URL})")
    parser.add_argument("--model", default="captioner", help="model name (default captioner)")
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--model-version", type=int, metavar="N",
                      help="a model version (default: the newest the server has)")
    pick.add_argument("--label", help="a version label, e.g. production")
    parser.add_argument("--beam", action="store_true", help="beam search: better captions, with alternatives and scores")
    parser.add_argument("--batch-size", type=int, default=16, help="images per request (default 16)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per image: path, caption, alternatives/scores (--beam), version")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each request (default 120)")
    parser.add_argument("--max-request-mb", type=float, default=DEFAULT_MAX_BODY_BYTES / 2**20,
                        help="the server's request-size limit (default 10, the local server's --max-body-mb): "
                             "requests are kept under it and a larger file is skipped with a message")
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    return parser


def tool_version() -> str:
    """The installed package's version (pyproject.toml), or "unknown" when run from a bare checkout."""
    try:
        return importlib.metadata.version("captioner")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def collect_files(arguments: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Image paths named by files, globs, directories and `-` (stdin), in order without
    repeats; and errors."""
    files: list[Path] = []
    errors: list[str] = []

    def add_directory(directory: Path) -> None:
        found = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            errors.append(f"{directory}: no {', '.join(IMAGE_SUFFIXES)} files in this directory")
        files.extend(found)

    for argument in arguments:
        path = Path(argument)
        if argument == "-":
            files.append(STDIN)
        elif path.is_dir():
            add_directory(path)
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(argument):
            matches = sorted(glob.glob(argument, recursive=True))
            if not matches:
                errors.append(f"{argument}: no file matches this pattern")
            for match in map(Path, matches):
                if match.is_dir():
                    add_directory(match)
                else:
                    files.append(match)
        else:
            errors.append(f"{argument}: no such file or directory")
    unique = list(dict.fromkeys(files))
    return unique, errors


def batches(files: Sequence[tuple[Path, int]], size: int, max_bytes: int) -> Iterator[list[tuple[Path, int]]]:
    """(path, file size) in order, in requests of at most `size` files and `max_bytes` of body."""
    batch: list[tuple[Path, int]] = []
    for item in files:
        if batch and (len(batch) == size or request_bytes([s for _, s in batch] + [item[1]]) > max_bytes):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def describe_failure(error: ServingError) -> str:
    """Why the server refused one image, in words a user acts on."""
    if error.status == 413:
        return f"too large for the server ({error.message})"
    if error.status == 400 and "image" in error.message.lower():
        return f"not an image ({error.message})"
    return str(error)


def caption_batch(client: CaptionClient, items: list[tuple[Path, bytes]], signature: str | None):
    """(path, result dict or error text) for each item; a refused batch is retried one by one."""
    try:
        results = client.caption([data for _, data in items], signature)
        return [(path, result) for (path, _), result in zip(items, results)]
    except ServerUnreachable as error:
        raise Fatal(f"{error.message}. Start a server with `make serve-local` (or `make serve` for TF Serving), "
                    f"or point --url / CAPTIONER_URL at a running one.") from None
    except ServingError as error:
        if error.status == 404:
            raise Fatal(f"{error.message} (at {client.model_url})") from None
        if len(items) == 1:
            return [(items[0][0], describe_failure(error))]
    outcomes = []
    for item in items:  # isolate the file(s) the server refused
        outcomes.extend(caption_batch(client, [item], signature))
    return outcomes


def print_result(path: Path, result: dict, as_json: bool, out: TextIO) -> None:
    if as_json:
        ordered = {"path": str(path), "caption": result["caption"], **result}
        print(json.dumps(ordered, ensure_ascii=False), file=out)
        return
    print(f"{path}\t{result['caption']}", file=out)
    for rank, (text, score) in enumerate(zip(result.get("alternatives", []), result.get("scores", [])), start=1):
        print(f"\t{rank}. {text}  ({score:.3f})", file=out)


class Progress:
    """"[32/120] 12.3 img/s" on stderr, when there is more than one request to wait for."""

    def __init__(self, total: int, enabled: bool, err: TextIO):
        self.total, self.enabled, self.err = total, enabled, err
        self.done = 0
        self.started = time.perf_counter()
        self.tty = hasattr(err, "isatty") and err.isatty()

    def update(self, count: int) -> None:
        self.done += count
        if not self.enabled:
            return
        rate = self.done / max(time.perf_counter() - self.started, 1e-9)
        end = "\r" if self.tty and self.done < self.total else "\n"
        print(f"[{self.done}/{self.total}] {rate:.1f} img/s", end=end, file=self.err, flush=True)


def run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: BinaryIO | None = None) -> int:
    files, errors = collect_files(args.images)
    stdin_bytes = (stdin or sys.stdin.buffer).read() if STDIN in files else b""
    for message in errors:
        print(f"error: {message}", file=err)
    if not files:
        if not errors:
            print("error: no images to caption", file=err)
        return 1
    max_bytes = int(args.max_request_mb * 2**20)
    client = CaptionClient(args.url, model=args.model, version=args.model_version, label=args.label,
                           timeout=args.timeout, max_request_bytes=max_bytes)
    signature = "beam_search" if args.beam else None
    failed = len(errors)
    sized = []
    for path in files:
        try:
            size = len(stdin_bytes) if path == STDIN else path.stat().st_size
        except OSError as error:
            print(f"error: {path}: cannot read ({error.strerror})", file=err)
            failed += 1
            continue
        if request_bytes([size]) > max_bytes:
            print(f"error: {path}: too large for the server ({size / 2**20:.1f} MB; a request may carry "
                  f"{args.max_request_mb:g} MB of base64, see --max-request-mb); skipped", file=err)
            failed += 1
            continue
        sized.append((path, size))
    progress = Progress(len(sized), enabled=not args.quiet and len(sized) > args.batch_size, err=err)
    try:
        for batch in batches(sized, args.batch_size, max_bytes):
            items = []
            for path, _ in batch:
                try:
                    items.append((path, stdin_bytes if path == STDIN else path.read_bytes()))
                except OSError as error:
                    print(f"error: {path}: cannot read ({error.strerror})", file=err)
                    failed += 1
            outcomes = caption_batch(client, items, signature) if items else []
            for path, outcome in outcomes:
                if isinstance(outcome, dict):
                    print_result(path, outcome, args.json, out)
                else:
                    print(f"error: {path}: {outcome}", file=err)
                    failed += 1
            out.flush()
            progress.update(len(batch))
    except Fatal as error:
        print(f"error: {error}", file=err)
        return 2
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    if not args.max_request_mb > 0:
        print("error: --max-request-mb must be more than 0", file=sys.stderr)
        return 2
    return run(args, sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
