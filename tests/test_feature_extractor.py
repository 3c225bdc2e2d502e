"""Tests of FeatureExtractor: Beam (DirectRunner, in process) over real ingested examples.

The raw examples are made by the ingestion code itself from a small synthetic dataset; the
backbone is EfficientNet-Lite0 with its real ImageNet weights, built once for the module
(the DoFns of every pipeline here reuse it through load_feature_model).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=FutureWarning)

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from apache_beam.testing import util as beam_testing  # noqa: E402
from tfx.components.util import examples_utils  # noqa: E402
from tfx.dsl.components.base import base_beam_executor  # noqa: E402
from tfx.proto import example_gen_pb2  # noqa: E402
from tfx.types import artifact_utils, channel, standard_artifacts  # noqa: E402
from tfx.utils import io_utils  # noqa: E402
from tfx_bsl.public import tfxio  # noqa: E402

from components.feature_extractor import extract  # noqa: E402
from components.feature_extractor.examples import float_feature, float_feature_bytes, output_example  # noqa: E402
from components.feature_extractor.feature_model import BackboneArgs, FeatureModel, load_feature_model  # noqa: E402
from components.feature_extractor.features_schema import features_schema  # noqa: E402
from components.feature_extractor.component import FeatureExtractor  # noqa: E402
from components.feature_extractor.executor import Executor  # noqa: E402
from components.flickr8k_example_gen import records  # noqa: E402
from data import layout, synthetic  # noqa: E402
from configs.config import SyntheticConfig  # noqa: E402
from models import contract  # noqa: E402
from models.backbones import get_backbone  # noqa: E402
from models.images import decode_images  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RAW_SCHEMA = REPO / "data" / "schema" / "schema.pbtxt"
SPLITS = ("train", "dev")  # 8 and 2 of the 12 images
LITE0 = BackboneArgs("efficientnet_lite0")
DIM = 1280
GRID = (7, 7, 1280)
BATCH = 3  # divides neither split's count


def make_pipeline() -> beam.Pipeline:
    return beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"]))


def serialized_records(pattern: str) -> list[bytes]:
    """The records of TFRecord files, gzipped (*.gz: raw examples) or not (features)."""
    files = sorted(tf.io.gfile.glob(pattern))
    assert files, f"no files match {pattern}"
    return [
        r.numpy()
        for f in files
        for r in tf.data.TFRecordDataset(f, compression_type="GZIP" if f.endswith(".gz") else "")
    ]


def read_records(pattern: str) -> list[tf.train.Example]:
    return [tf.train.Example.FromString(r) for r in serialized_records(pattern)]


def values(example: tf.train.Example, key: str) -> list:
    feature = example.features.feature[key]
    return list(getattr(feature, feature.WhichOneof("kind")).value)


def by_id(examples: list[tf.train.Example]) -> dict[str, tf.train.Example]:
    return {values(e, "image_id")[0].decode(): e for e in examples}


@pytest.fixture(scope="module")
def raw_examples(tmp_path_factory) -> Path:
    """An Examples artifact dir: Split-train/ and Split-dev/ of gzipped raw tf.Examples."""
    root = tmp_path_factory.mktemp("feature_extractor")
    data_dir = root / "d"
    synthetic.generate_dataset(data_dir, SyntheticConfig(num_images=12, seed=3))
    scan = layout.scan_layout(data_dir, SPLITS)
    out = root / "examples"
    for split in SPLITS:
        (out / f"Split-{split}").mkdir(parents=True)
        path = str(out / f"Split-{split}" / "data_tfrecord-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for record in scan.records[split]:
                outcome = records.load_record(record, max_pixels=50_000_000)
                assert outcome.example, outcome
                writer.write(outcome.example)
    return out


@pytest.fixture(scope="module")
def feature_model() -> FeatureModel:
    """Built once; held here so every DoFn in this module reuses it."""
    return load_feature_model(LITE0)


def run_extraction(raw_dir: Path, out_dir: Path, splits=SPLITS, store_grid=False, batch_size=BATCH) -> None:
    with make_pipeline() as pipeline:
        for split in splits:
            extract.extract_split(
                pipeline,
                input_pattern=str(raw_dir / f"Split-{split}" / "*.gz"),
                output_prefix=str(out_dir / f"Split-{split}" / extract.OUTPUT_PREFIX),
                backbone_args=LITE0,
                batch_size=batch_size,
                store_grid=store_grid,
            )
    metrics = extract.split_metrics(pipeline.result)
    for split in splits:
        assert metrics[split]["images"] == len(read_records(str(raw_dir / f"Split-{split}" / "*.gz")))


@pytest.fixture(scope="module")
def features(raw_examples, feature_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("features")
    run_extraction(raw_examples, out)
    return out


def split_pair(raw_dir: Path, out_dir: Path, split: str):
    raw = by_id(read_records(str(raw_dir / f"Split-{split}" / "*.gz")))
    out = by_id(read_records(str(out_dir / f"Split-{split}" / "*")))
    return raw, out


# --- the Beam step -----------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_one_output_per_image_with_ids_and_captions(raw_examples, features, split):
    raw, out = split_pair(raw_examples, features, split)
    assert len(raw) % BATCH != 0  # a short last batch is not lost
    assert len(read_records(str(features / f"Split-{split}" / "*"))) == len(raw)
    assert set(out) == set(raw)
    for image_id, example in out.items():
        assert set(example.features.feature) == {"image_id", "captions", contract.IMAGE_FEATURES_KEY}
        assert values(example, "captions") == values(raw[image_id], "captions")
        assert len(values(raw[image_id], "captions")) == 5


def test_features_are_finite_and_differ_between_images(raw_examples, features):
    _, out = split_pair(raw_examples, features, "train")
    matrix = np.array([values(e, contract.IMAGE_FEATURES_KEY) for e in out.values()], np.float32)
    assert matrix.shape == (len(out), DIM)
    assert np.isfinite(matrix).all()
    assert matrix.std(axis=0).max() > 1e-3
    assert len({row.tobytes() for row in matrix}) == len(out)


def test_features_equal_a_direct_backbone_call(raw_examples, features):
    """The serving graph's decode + a freshly built model give the very same vectors."""
    model = get_backbone("efficientnet_lite0").build_feature_model()
    for split in SPLITS:
        raw, out = split_pair(raw_examples, features, split)
        ids = sorted(raw)
        encoded = tf.constant([values(raw[i], "image/encoded")[0] for i in ids])
        expected = model(decode_images(encoded, 224), training=False)["pooled"].numpy()
        got = np.array([values(out[i], contract.IMAGE_FEATURES_KEY) for i in ids], np.float32)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_grid_is_stored_row_major_and_pools_to_the_features(raw_examples, feature_model, tmp_path):
    run_extraction(raw_examples, tmp_path, splits=("dev",), store_grid=True, batch_size=32)
    raw, out = split_pair(raw_examples, tmp_path, "dev")
    assert set(out) == set(raw)
    for example in out.values():
        grid = np.array(values(example, contract.IMAGE_GRID_KEY), np.float32)
        assert grid.shape == (np.prod(GRID),)
        pooled = np.array(values(example, contract.IMAGE_FEATURES_KEY), np.float32)
        np.testing.assert_allclose(grid.reshape(GRID).mean(axis=(0, 1)), pooled, rtol=1e-4, atol=1e-5)


def test_stored_features_and_grid_are_the_models_output_bit_for_bit(raw_examples, feature_model, tmp_path):
    """Through the whole Beam step (read, batch, extract, serialize, write) no bit changes:
    one image a batch on both sides, so the same kernels run on the same input."""
    run_extraction(raw_examples, tmp_path, splits=("dev",), store_grid=True, batch_size=1)
    raw, out = split_pair(raw_examples, tmp_path, "dev")
    for image_id, example in out.items():
        expected = feature_model([values(raw[image_id], "image/encoded")[0]], with_grid=True)
        for key, name in ((contract.IMAGE_FEATURES_KEY, "pooled"), (contract.IMAGE_GRID_KEY, "grid")):
            got = np.array(values(example, key), np.float32)
            np.testing.assert_array_equal(got.view(np.uint32), expected[name][0].reshape(-1).view(np.uint32))


def test_dofn_takes_dicts_and_names_an_image_that_does_not_decode(raw_examples, feature_model):
    raw = list(by_id(read_records(str(raw_examples / "Split-dev" / "*.gz"))).values())[0]
    good = {
        "image_id": "good",
        "image/encoded": values(raw, "image/encoded")[0],
        "image/height": 10,
        "captions": ["a b .", "c d ."],
    }
    dofn = extract.ExtractFeatures(LITE0, store_grid=False, split="unit")
    dofn.setup()
    dofn.start_bundle()
    (serialized,) = dofn.process([good])
    out = tf.train.Example.FromString(serialized)
    assert values(out, "image_id") == [b"good"] and values(out, "captions") == [b"a b .", b"c d ."]
    assert "image/height" not in out.features.feature
    with pytest.raises(ValueError, match=r"cannot decode image\(s\) \['broken'\]"):
        list(dofn.process([good, {**good, "image_id": "broken", "image/encoded": b"not an image"}]))


def test_float_feature_matches_the_proto_constructor():
    rng = np.random.default_rng(0)
    for n in (0, 1, 127, 128, 16_384, 62_720):
        arr = rng.standard_normal(n).astype(np.float32)
        stock = tf.train.Feature(float_list=tf.train.FloatList(value=arr))
        assert float_feature(arr) == stock
        if n:  # protobuf leaves an empty packed field out; the bytes parse equal anyway
            assert float_feature_bytes(arr) == stock.SerializeToString()


def awkward_floats(n: int) -> np.ndarray:
    """float32 values whose bits a lossy or reordering writer would change."""
    special = np.array([0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38, 3.4028235e38, -3.4028235e38, 1 / 3], np.float32)
    rng = np.random.default_rng(7)
    return np.concatenate([special, rng.standard_normal(n - len(special)).astype(np.float32)])


def test_output_example_is_read_back_bit_for_bit_with_the_features_schema():
    """What the writer stores, Transform's parser (the features schema's spec) reads back
    bit for bit, the grid row-major; a stale value of a feature key is replaced."""
    from tensorflow_transform.tf_metadata import schema_utils

    grid = awkward_floats(int(np.prod(GRID))).reshape(GRID)
    pooled = awkward_floats(DIM)
    raw = tf.train.Example()
    raw.features.feature["image_id"].bytes_list.value.append(b"x")
    raw.features.feature["captions"].bytes_list.value.extend([b"a b .", b"c ."])
    raw.features.feature[contract.IMAGE_ENCODED_KEY].bytes_list.value.append(b"jpeg")
    raw.features.feature[contract.IMAGE_FEATURES_KEY].float_list.value.extend([9.0, 9.0])
    serialized = output_example(raw, pooled, grid).SerializeToString()

    schema = features_schema(io_utils.SchemaReader().read(str(RAW_SCHEMA)), DIM, GRID)
    spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    parsed = tf.io.parse_example(tf.constant([serialized]), spec)
    got_grid = parsed[contract.IMAGE_GRID_KEY].numpy()[0]
    got_pooled = parsed[contract.IMAGE_FEATURES_KEY].numpy()[0]
    assert got_grid.dtype == np.float32 and got_grid.shape == (int(np.prod(GRID)),)
    np.testing.assert_array_equal(got_grid.view(np.uint32), grid.reshape(-1).view(np.uint32))
    np.testing.assert_array_equal(got_pooled.view(np.uint32), pooled.view(np.uint32))
    assert contract.IMAGE_ENCODED_KEY not in tf.train.Example.FromString(serialized).features.feature


# --- the schema --------------------------------------------------------------------------


def test_features_schema_drops_the_image_and_adds_features():
    raw = io_utils.SchemaReader().read(str(RAW_SCHEMA))
    before = raw.SerializeToString()
    schema = features_schema(raw, DIM)
    assert raw.SerializeToString() == before  # a copy, not an edit
    by_name = {f.name: f for f in schema.feature}
    assert set(by_name) == {"image_id", "captions", contract.IMAGE_FEATURES_KEY}
    assert [d.size for d in by_name[contract.IMAGE_FEATURES_KEY].shape.dim] == [DIM]
    assert by_name[contract.IMAGE_FEATURES_KEY].presence.min_fraction == 1.0
    assert [d.size for d in by_name["image_id"].shape.dim] == [1]
    assert by_name["captions"].value_count.max == 10
    with_grid = {f.name: f for f in features_schema(raw, DIM, GRID).feature}
    assert [d.size for d in with_grid[contract.IMAGE_GRID_KEY].shape.dim] == [7 * 7 * 1280]


# --- the TFX component -------------------------------------------------------------------


def test_component_exec_properties_cover_what_changes_features(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    component = FeatureExtractor(
        examples=channel.Channel(type=standard_artifacts.Examples),
        schema=channel.Channel(type=standard_artifacts.Schema),
        backbone="densenet201",
        weights=None,
        weights_path=str(weights),
        batch_size=16,
        store_grid=True,
    )
    props = component.exec_properties
    assert props["backbone"] == "densenet201" and props["weights"] == "" and props["store_grid"] is True
    assert props["weights_path"] == str(weights) and len(props["weights_fingerprint"]) == 64
    assert props["feature_version"] == extract.FEATURE_VERSION and props["batch_size"] == 16
    assert set(component.outputs) == {"features", "features_schema"}


def run_executor(raw_examples: Path, tmp_path: Path, splits: tuple[str, ...], **exec_properties):
    """The FeatureExtractor executor over `splits` of the raw examples, as TFX calls it, with
    Lite0's ImageNet weights and `exec_properties` over the defaults: (features, schema)."""
    examples = standard_artifacts.Examples()
    examples.uri = str(raw_examples)
    examples.split_names = artifact_utils.encode_split_names(list(splits))
    examples_utils.set_payload_format(examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
    raw_schema = standard_artifacts.Schema()
    raw_schema.uri = str(tmp_path / "raw_schema")
    os.makedirs(raw_schema.uri)
    shutil.copy(RAW_SCHEMA, os.path.join(raw_schema.uri, "schema.pbtxt"))
    features, schema = standard_artifacts.Examples(), standard_artifacts.Schema()
    features.uri, schema.uri = str(tmp_path / "features"), str(tmp_path / "schema")
    os.makedirs(features.uri)
    os.makedirs(schema.uri)
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=["--direct_running_mode=in_memory"])
    defaults = {
        "backbone": "efficientnet_lite0",
        "weights": "imagenet",
        "weights_path": "",
        "weights_fingerprint": "",
        "feature_version": extract.FEATURE_VERSION,
        "store_grid": False,
        "map_from_block": 0,
        "batch_size": 4,
    }
    Executor(context).Do(
        {"examples": [examples], "schema": [raw_schema]},
        {"features": [features], "features_schema": [schema]},
        {**defaults, **exec_properties},
    )
    return features, schema


def test_executor_writes_examples_tf_transform_can_parse(raw_examples, feature_model, tmp_path):
    from tensorflow_transform.tf_metadata import schema_utils

    features, schema = run_executor(raw_examples, tmp_path, SPLITS)

    assert artifact_utils.decode_split_names(features.split_names) == list(SPLITS)
    assert examples_utils.get_payload_format(features) == example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE
    assert features.get_int_custom_property("num_examples_train") == 8
    assert features.get_int_custom_property("feature_dim") == DIM
    out_schema = io_utils.SchemaReader().read(os.path.join(schema.uri, "schema.pbtxt"))
    spec = schema_utils.schema_as_feature_spec(out_schema).feature_spec
    assert spec[contract.IMAGE_FEATURES_KEY] == tf.io.FixedLenFeature([DIM], tf.float32)
    assert spec["image_id"] == tf.io.FixedLenFeature([1], tf.string)
    assert isinstance(spec["captions"], tf.io.VarLenFeature)
    for split in SPLITS:
        split_uri = artifact_utils.get_split_uri([features], split)
        serialized = serialized_records(os.path.join(split_uri, "*"))
        parsed = tf.io.parse_example(tf.constant(serialized), spec)
        assert parsed[contract.IMAGE_FEATURES_KEY].shape == (len(serialized), DIM)
        assert parsed["captions"].dense_shape[1] == 5
        # The way TFX Transform reads an Examples split (every file, compression by suffix).
        with make_pipeline() as pipeline:
            records = pipeline | tfxio.TFExampleRecord(io_utils.all_files_pattern(split_uri)).RawRecordBeamSource()
            beam_testing.assert_that(records | beam.combiners.Count.Globally(), beam_testing.equal_to([len(serialized)]))


def test_features_are_written_uncompressed(features):
    """gzip shrank a grid example 6x but took over a third of the backbone's time (extract.py)."""
    for split in SPLITS:
        files = sorted((features / f"Split-{split}").iterdir())
        assert files and all(f.name.startswith(extract.OUTPUT_PREFIX) and f.suffix != ".gz" for f in files)
        with open(files[0], "rb") as f:
            assert f.read(2) != b"\x1f\x8b"  # the gzip magic


def test_hardware_crc32c_gives_the_checksums_of_beams_fallback():
    """The writer's checksums stay what crcmod (Beam's fallback) computes; tf.data, which
    reads every features file in these tests, verifies them on each record."""
    import crcmod.predefined
    from apache_beam.io import tfrecordio

    reference = crcmod.predefined.mkPredefinedCrcFun("crc-32c")
    assert extract.use_hardware_crc32c()
    rng = np.random.default_rng(1)
    for data in (b"", b"a", rng.bytes(1000), float_feature_bytes(awkward_floats(62_720))):
        assert tfrecordio._default_crc32c_fn(data) == reference(data)


def test_with_a_fine_tuned_block_the_executor_stores_the_map_the_top_turns_into_the_features(raw_examples, tmp_path):
    """features.finetune_from_block: the map entering the block replaces the grid, in the
    examples and in the schema, and the backbone's top computes the stored features from it."""
    from tensorflow_transform.tf_metadata import schema_utils

    features, schema = run_executor(raw_examples, tmp_path, ("dev",), map_from_block=11)
    map_shape = (14, 14, 112)
    assert features.get_string_custom_property("map_shape") == "14,14,112"
    spec = schema_utils.schema_as_feature_spec(
        io_utils.SchemaReader().read(os.path.join(schema.uri, "schema.pbtxt"))).feature_spec
    assert spec[contract.IMAGE_MAP_KEY] == tf.io.FixedLenFeature([int(np.prod(map_shape))], tf.float32)
    assert contract.IMAGE_GRID_KEY not in spec
    serialized = serialized_records(os.path.join(artifact_utils.get_split_uri([features], "dev"), "*"))
    parsed = tf.io.parse_example(tf.constant(serialized), spec)
    _, _, top = get_backbone("efficientnet_lite0").build_split_models(11)
    maps = tf.reshape(parsed[contract.IMAGE_MAP_KEY], [-1, *map_shape])
    np.testing.assert_allclose(top(maps)["pooled"].numpy(), parsed[contract.IMAGE_FEATURES_KEY].numpy(),
                               rtol=1e-4, atol=1e-4)
