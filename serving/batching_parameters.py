"""TF Serving's batching parameters file (`--batching_parameters_file`), read for the local server.

Called by serving/local_server.py (`--enable-batching --batching-parameters-file FILE`), so
the local server batches by the very file `make serve` hands to TF Serving
(serving/batching.config). The file is a text-format `tensorflow.serving.BatchingParameters`
message. The installed tensorflow-serving-api has no Python class for it, so the message
is declared here with protobuf's descriptor API (TF Serving's field names and wrapper
types) and parsed by protobuf's own text_format: unknown fields, repeated singular fields
and malformed values are refused with their line and column, as TF Serving refuses them.
Then the checks TF Serving makes when it builds its scheduler.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

MESSAGE = "tensorflow.serving.BatchingParameters"
_INT64 = ".google.protobuf.Int64Value"
_BOOL = ".google.protobuf.BoolValue"
_STRING = ".google.protobuf.StringValue"
# name -> type, as in TF Serving's session_bundle_config.proto (text format reads names, not numbers).
_FIELDS = {
    "max_batch_size": _INT64,
    "batch_timeout_micros": _INT64,
    "max_enqueued_batches": _INT64,
    "num_batch_threads": _INT64,
    "thread_pool_name": _STRING,
    "allowed_batch_sizes": "repeated int64",
    "pad_variable_length_inputs": "bool",
    "enable_large_batch_splitting": _BOOL,
    "max_execution_batch_size": _INT64,
}


class BatchingConfigError(ValueError):
    """A batching parameters file that cannot be used; the message names the file and why."""


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """The settings, with TF Serving's defaults for the fields a file leaves out.

    `execution_batch_size` is the most images one batch holds: max_execution_batch_size with
    large-batch splitting, else max_batch_size (then also the largest request accepted).
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)  # TF Serving: the cores
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False  # this model's inputs are 1-D strings: nothing to pad
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None
    source: str = "TF Serving's defaults"

    @property
    def execution_batch_size(self) -> int:
        if self.enable_large_batch_splitting:
            return self.max_execution_batch_size or self.max_batch_size
        return self.max_batch_size

    @property
    def batch_timeout_seconds(self) -> float:
        return self.batch_timeout_micros / 1e6

    def describe(self) -> str:
        split = f", split into batches of {self.execution_batch_size}" if self.enable_large_batch_splitting else ""
        return (f"batches of up to {self.execution_batch_size} images (requests up to {self.max_batch_size}{split}), "
                f"timeout {self.batch_timeout_micros} us, {self.num_batch_threads} batch thread(s), "
                f"at most {self.max_enqueued_batches} queued batches; from {self.source}")


@functools.lru_cache(maxsize=1)
def message_class():
    """The BatchingParameters message class, declared in a private descriptor pool."""
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    proto = descriptor_pb2.FileDescriptorProto(
        name="captioner/batching_parameters.proto", package=MESSAGE.rsplit(".", 1)[0], syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name=MESSAGE.rsplit(".", 1)[1])
    kinds = descriptor_pb2.FieldDescriptorProto
    for number, (name, kind) in enumerate(_FIELDS.items(), start=1):
        field = message.field.add(name=name, number=number, label=kinds.LABEL_OPTIONAL)
        if kind.startswith("."):
            field.type, field.type_name = kinds.TYPE_MESSAGE, kind
        elif kind == "bool":
            field.type = kinds.TYPE_BOOL
        else:
            field.type, field.label = kinds.TYPE_INT64, kinds.LABEL_REPEATED
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName(MESSAGE)
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.21
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def parse(text: str, source: str = "<text>") -> BatchingParameters:
    """The parameters in a text-format BatchingParameters message; BatchingConfigError if unusable."""
    message = message_class()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise BatchingConfigError(f"{source}:{error}") from None
    values = {}
    for name, kind in _FIELDS.items():
        if kind.startswith("."):
            if message.HasField(name):
                values[name] = getattr(message, name).value
        elif kind == "bool":
            values[name] = getattr(message, name)
        else:
            values[name] = tuple(getattr(message, name))
    params = BatchingParameters(**values, source=source)
    _check(params, source)
    return params


def read(path: Path) -> BatchingParameters:
    """parse() of a file; a file that cannot be read is a BatchingConfigError too."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BatchingConfigError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    return parse(text, str(path))


def _check(params: BatchingParameters, source: str) -> None:
    """TF Serving's own checks of the values (it refuses to load the model otherwise)."""

    def fail(message: str):
        raise BatchingConfigError(f"{source}: {message}")

    for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
        if getattr(params, name) < 1:
            fail(f"{name} must be at least 1, got {getattr(params, name)}")
    if params.batch_timeout_micros < 0:
        fail(f"batch_timeout_micros must not be negative, got {params.batch_timeout_micros}")
    if params.max_execution_batch_size is not None and params.max_execution_batch_size < 1:
        fail(f"max_execution_batch_size must be at least 1, got {params.max_execution_batch_size}")
    if params.enable_large_batch_splitting and params.execution_batch_size > params.max_batch_size:
        fail(f"max_execution_batch_size ({params.execution_batch_size}) must not be over max_batch_size "
             f"({params.max_batch_size}), the largest request")
    sizes = params.allowed_batch_sizes
    if sizes:
        if any(size < 1 for size in sizes) or any(b <= a for a, b in zip(sizes, sizes[1:])):
            fail(f"allowed_batch_sizes must be positive and increasing, got {list(sizes)}")
        if sizes[-1] != params.execution_batch_size:
            name = "max_execution_batch_size" if params.enable_large_batch_splitting else "max_batch_size"
            fail(f"the last of allowed_batch_sizes must equal {name}; last entry was {sizes[-1]}, "
                 f"expected {params.execution_batch_size}")
