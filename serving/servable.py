"""One loaded version of the serving SavedModel: its signatures, its metadata, predict.

Called by serving/local_server.py (through serving/versions.py, which decides what to load).
A Servable is immutable once built, and SavedModel signature calls are thread-safe, so one
object serves concurrent requests; unloading a version just drops the registry's reference
(requests in flight keep theirs).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from serving.rest import RestError

log = logging.getLogger(__name__)

class Servable:
    """A SavedModel version loaded for prediction."""

    def __init__(self, version: int, path: Path, warmup: bool = True):
        self.version = version
        self.path = Path(path)
        started = time.perf_counter()
        self._model = tf.saved_model.load(str(self.path))
        self.signatures = {name: fn for name, fn in self._model.signatures.items()}
        self.signature_defs = read_signature_defs(self.path)
        self.graph_calls = 0  # signature calls so far, warm-up included (tests count batching by it)
        self._calls_lock = threading.Lock()
        self.load_seconds = time.perf_counter() - started
        if warmup:
            self.warm_up()

    def input_names(self, signature_name: str) -> list[str]:
        """The signature's input names; 400 when the model has no such signature."""
        fn = self.signatures.get(signature_name)
        if fn is None:
            raise RestError(
                400,
                f'Serving signature name: "{signature_name}" not found in signature def '
                f"(the model has: {', '.join(sorted(self.signatures))})",
            )
        specs = fn.structured_input_signature[1]
        not_strings = [name for name, spec in specs.items() if spec.dtype != tf.string]
        if not_strings:
            raise RestError(400, f"inputs {not_strings} are not DT_STRING: the local server only feeds string inputs")
        return sorted(specs)

    def predict(
        self, signature_name: str, inputs: dict[str, list[bytes]], max_execution_batch_size: int | None = None
    ) -> dict[str, np.ndarray]:
        """Runs a signature on a batch; the model's InvalidArgumentError (bad image bytes) is a 400.

        With max_execution_batch_size, a larger batch runs as several graph calls of at most
        that many instances and the outputs are joined (TF Serving's large-batch splitting):
        the activations of one call, not of the whole request, set the memory a request costs.
        """
        fn = self.signatures[signature_name]
        batch = max(len(values) for values in inputs.values())
        step = max_execution_batch_size or batch
        parts = []
        for start in range(0, batch, step):
            feeds = {name: tf.constant(values[start : start + step], dtype=tf.string) for name, values in inputs.items()}
            with self._calls_lock:
                self.graph_calls += 1
            try:
                outputs = fn(**feeds)
            except tf.errors.InvalidArgumentError as error:
                raise RestError(400, clean_tf_error(error.message)) from None
            parts.append({name: tensor.numpy() for name, tensor in outputs.items()})
        if len(parts) == 1:
            return parts[0]
        return {name: join_batches([part[name] for part in parts]) for name in parts[0]}

    def split_outputs(self, signature_name: str, outputs: dict[str, np.ndarray], sizes: list[int]) -> list[dict[str, np.ndarray]]:
        """The outputs of one call over several requests' images, as each request's own outputs
        (serving/batching.py calls it): split_batches over the signature's variable-length axes."""
        specs = self.signatures[signature_name].structured_outputs
        variable = {name: tuple(i for i, size in enumerate(spec.shape) if i > 0 and size is None) for name, spec in specs.items()}
        return split_batches(outputs, sizes, variable)

    def warm_up(self) -> None:
        """Calls every signature once on a tiny image, so the first request is not the slow one."""
        image = tf.io.encode_png(tf.fill([8, 8, 3], tf.constant(128, tf.uint8))).numpy()
        started = time.perf_counter()
        for name in self.signatures:
            try:
                self.predict(name, {input_name: [image] for input_name in self.input_names(name)})
            except RestError:
                pass  # a signature this server cannot feed; requests for it will say why
        log.info("version %d: warmed up %d signature(s) in %.1f s", self.version, len(self.signatures), time.perf_counter() - started)

    def model_card(self) -> dict | None:
        """The card the pusher stored with this version (assets.extra/), or None (not pushed by the pipeline)."""
        record = self.path / "assets.extra" / "captioner_push.json"
        try:
            card = json.loads(record.read_text()).get("card")
        except (OSError, ValueError, AttributeError):
            return None
        return card if isinstance(card, dict) else None

    def metadata(self, model_name: str) -> dict:
        """TF Serving's GetModelMetadataResponse as JSON."""
        return {
            "model_spec": {"name": model_name, "signature_name": "", "version": str(self.version)},
            "metadata": {
                "signature_def": {
                    "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                    "signature_def": self.signature_defs,
                }
            },
        }


def join_batches(arrays: list[np.ndarray]) -> np.ndarray:
    """The outputs of several graph calls as one batch: joined on axis 0, each first padded on
    the other axes to the largest size among them (a call's captions, and so its words and
    attention rows, are as long as its own longest one); strings pad with "", numbers with 0,
    as the model pads past <end>."""
    shape = np.max([a.shape for a in arrays], axis=0)
    padded = []
    for a in arrays:
        widths = [(0, 0)] + [(0, int(size - have)) for size, have in zip(shape[1:], a.shape[1:])]
        fill = b"" if a.dtype == object else 0
        padded.append(np.pad(a, widths, constant_values=fill) if any(w for _, w in widths) else a)
    return np.concatenate(padded)


def split_batches(
    outputs: dict[str, np.ndarray], sizes: list[int], variable_axes: dict[str, tuple[int, ...]]
) -> list[dict[str, np.ndarray]]:
    """join_batches undone: each part's rows (sizes[i] of them, in order), cut back on its
    variable-length axes to the length its own call would have given. A call's captions, words
    and attention rows are as long as its longest caption, so a short caption in a batch with a
    long one comes back padded ("" and 0 past <end>); the trailing positions that are padding in
    every output sharing that axis (the same variable axis, the same length) are dropped."""
    parts, start = [], 0
    for size in sizes:
        part = {name: array[start : start + size] for name, array in outputs.items()}
        start += size
        groups: dict[tuple[int, int], list[str]] = {}
        for name, axes in variable_axes.items():
            for axis in axes:
                if name in part and part[name].ndim > axis:
                    groups.setdefault((axis, part[name].shape[axis]), []).append(name)
        for (axis, length), names in groups.items():
            keep = length
            while keep > 0 and all(_is_padding(np.take(part[name], keep - 1, axis=axis)) for name in names):
                keep -= 1
            if keep < length:
                cut = (slice(None),) * axis + (slice(0, keep),)
                for name in names:
                    part[name] = part[name][cut]
        parts.append(part)
    return parts


def _is_padding(values: np.ndarray) -> bool:
    return bool(np.all(values == (b"" if values.dtype == object else 0)))


def read_signature_defs(path: Path) -> dict:
    """signature_def of the SavedModel's (serve) meta graph, as protobuf JSON like TF Serving writes it."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    meta_graph = next((g for g in saved_model.meta_graphs if "serve" in g.meta_info_def.tags), saved_model.meta_graphs[0])
    return {
        name: json_format.MessageToDict(signature, preserving_proto_field_name=True, including_default_value_fields=True)
        for name, signature in sorted(meta_graph.signature_def.items())
    }


def clean_tf_error(message: str) -> str:
    """The op's own words from a TF error: no "Graph execution error", node names or [Op:...]."""
    lines = [line for line in message.splitlines() if line.strip()]
    start = 0
    for i, line in enumerate(lines):
        if line.startswith("<stack traces unavailable>") or line.startswith("Node: "):
            start = i + 1
    kept = [
        line.strip()
        for line in lines[start:]
        if not line.startswith(("Graph execution error", "Detected at node")) and not line.strip().startswith("[[")
    ]
    text = " ".join(kept) or message.strip()
    assertion = re.match(r"assertion failed: \[(.*?)\]", text)
    if assertion:
        text = assertion.group(1)
    return re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", text)
