"""The trained smoke models: they learned, their exports serve odd input, and TF Serving can load them.

Every test runs for the merge model (`trained_run`) and the attention model (`attention_run`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models.metrics import corpus_bleu_scores
from data import layout
from tests import images, mlmd

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["merge", "attention"])
def trained_run(request):
    """The session's smoke run of this architecture."""
    return request.getfixturevalue("smoke_run" if request.param == "merge" else "attention_run")


@pytest.fixture(scope="module")
def export_dir(trained_run) -> Path:
    return mlmd.latest_uri(trained_run.metadata_path, "Model") / "Format-Serving"


@pytest.fixture(scope="module")
def serving(export_dir):
    return tf.saved_model.load(str(export_dir))


def _caption_split(serving, records, signature="serving_default") -> dict[str, str]:
    captions = {}
    fn = serving.signatures[signature]
    for start in range(0, len(records), 32):
        batch = records[start : start + 32]
        encoded = tf.constant([Path(r.path).read_bytes() for r in batch])
        for record, caption in zip(batch, fn(images=encoded)["caption"].numpy()):
            captions[record.image_id] = caption.decode()
    return captions


def test_model_learned_held_out_images(trained_run, serving):
    """BLEU-4 >= 0.5 on the test split, which training never saw."""
    records = layout.scan_layout(trained_run.config.data_dir, ["test"]).records["test"]
    hypotheses = _caption_split(serving, records)
    scores = corpus_bleu_scores(hypotheses, {r.image_id: r.captions for r in records})
    assert scores["bleu_4"] >= 0.5, (scores, list(hypotheses.values())[:5])


def test_training_loss_fell(trained_run):
    run_dirs = sorted((mlmd.latest_uri(trained_run.metadata_path, "ModelRun")).glob("history.json"))
    history = json.loads(run_dirs[0].read_text())
    assert history["val_loss"][-1] < 0.5 * history["val_loss"][0]


def test_beam_search_returns_ranked_alternatives(trained_run, serving):
    records = layout.scan_layout(trained_run.config.data_dir, ["dev"]).records["dev"][:4]
    out = serving.signatures["beam_search"](images=tf.constant([Path(r.path).read_bytes() for r in records]))
    k = trained_run.config.decode.beam_width
    assert out["alternatives"].shape == (4, k)
    assert np.all(np.diff(out["scores"].numpy(), axis=1) <= 1e-6)
    np.testing.assert_array_equal(out["caption"].numpy(), out["alternatives"].numpy()[:, 0])


@pytest.mark.parametrize(
    "name,encoded",
    [
        ("1x1 JPEG", images.solid_rgb(1, 1)),
        ("6000x4000 JPEG", images.solid_rgb(4000, 6000)),
        ("grayscale PNG", images.grayscale_png()),
        ("RGBA PNG", images.rgba_png()),
    ],
)
def test_odd_valid_images_get_a_caption(serving, name, encoded):
    caption = serving.signatures["serving_default"](images=tf.constant([encoded]))["caption"].numpy()[0]
    assert caption.decode().strip(), f"{name}: empty caption"


@pytest.mark.parametrize(
    "encoded,message",
    [(b"", "image bytes are empty"), (b"this is not an image", "Unknown image file format")],
)
def test_invalid_images_raise_a_clear_error_and_the_model_keeps_serving(serving, encoded, message):
    fn = serving.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        fn(images=tf.constant([images.solid_rgb(32, 32), encoded]))
    assert fn(images=tf.constant([images.solid_rgb(32, 32)]))["caption"].shape == (1,)


FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    # Keras and the project are made unimportable before TensorFlow loads, as on TF Serving.
    for name in ("keras", "tf_keras", "models", "components", "configs"):
        sys.modules[name] = None
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    export_dir, image_path = sys.argv[1], sys.argv[2]
    model = tf.saved_model.load(export_dir)
    caption = model.signatures["serving_default"](images=tf.constant([open(image_path, "rb").read()]))["caption"]
    proto = saved_model_pb2.SavedModel.FromString(open(export_dir + "/saved_model.pb", "rb").read())
    ops = set()
    for meta_graph in proto.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    loaded = sorted(
        m for m, module in sys.modules.items()
        if module is not None and m.split(".")[0] in ("keras", "tf_keras", "models", "components", "configs")
    )
    print(json.dumps({
        "caption": caption.numpy()[0].decode(),
        "ops": sorted(ops),
        "unregistered": sorted(op for op in ops if op_def_registry.get(op) is None),
        "project_or_keras_modules": loaded,
    }))
    """
)


def test_export_runs_in_a_fresh_process_with_stock_ops_only(trained_run, export_dir, tmp_path):
    record = layout.scan_layout(trained_run.config.data_dir, ["test"]).records["test"][0]
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS)
    result = subprocess.run(
        [sys.executable, str(script), str(export_dir), record.path],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["caption"].strip()
    assert report["project_or_keras_modules"] == []
    assert report["unregistered"] == []
    assert not {"PyFunc", "EagerPyFunc", "PyFuncStateless"} & set(report["ops"])
    ops = set(report["ops"])
    assert {"DecodeImage", "LookupTableFindV2"} <= ops  # decoding and detokenization in-graph
    assert {"While", "StatelessWhile"} & ops  # the decoding loop is a graph loop
    if trained_run.config.decode.no_repeat_ngram_size:  # the attention profile blocks repeats
        assert "DenseBincount" in ops
