"""Tests of Flickr8kExampleGen's ingestion: Beam (DirectRunner, in process) over damaged data.

Two pipelines in all: one that tolerates the damage and publishes examples, and one with
the default 1% limit that must fail and publish nothing. Plus unit tests of the per-image
check in records.py.
"""

from __future__ import annotations

import json
import os
import threading
import types
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=FutureWarning)

import apache_beam as beam  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from PIL import Image  # noqa: E402

from components.flickr8k_example_gen import ingest, records  # noqa: E402
from components.flickr8k_example_gen.ingest import IngestionError, run_ingestion  # noqa: E402
from configs.config import IngestConfig  # noqa: E402
from data import layout  # noqa: E402
from data.synthetic import split_counts  # noqa: E402
from models import contract  # noqa: E402
from tests import datasets  # noqa: E402
from tests.images import pil_bytes, png_header_only  # noqa: E402

SPLITS = ["train", "dev", "test"]
NUM_IMAGES = 40
SEED = 1
SPLIT_SIZES = dict(zip(SPLITS, split_counts(NUM_IMAGES, (0.7, 0.15, 0.15))))


def make_pipeline() -> beam.Pipeline:
    return beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"]))


def damage(root: Path) -> dict[str, str]:
    """One random-bytes JPEG in train, one half JPEG in dev, one malformed caption line."""
    bad = {
        "corrupt": datasets.split_ids(root, "train")[4],
        "truncated": datasets.split_ids(root, "dev")[2],
    }
    datasets.corrupt_image(root, bad["corrupt"])
    datasets.truncate_image(root, bad["truncated"])
    datasets.append_caption_line(root, b"this line has no tab")
    return bad


def replace_with_fifo(root: Path, image_id: str) -> Path:
    """Turn an image into a named pipe nobody writes to: opening it for reading blocks."""
    path = datasets.image_path(root, image_id)
    path.unlink()
    os.mkfifo(path)
    return path


def read_examples(out_dir: Path, split: str) -> list[tf.train.Example]:
    files = sorted(str(p) for p in ingest.split_dir(out_dir, split).glob(f"{ingest.EXAMPLES_PREFIX}-*.gz"))
    assert files, f"no example files in {ingest.split_dir(out_dir, split)}"
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return [tf.train.Example.FromString(record.numpy()) for record in dataset]


def feature(example: tf.train.Example, name: str) -> list:
    f = example.features.feature[name]
    return list(getattr(f, f.WhichOneof("kind")).value)


@pytest.fixture(scope="module")
def tolerant_run(tmp_path_factory: pytest.TempPathFactory):
    """Ingest damaged data with a 50% limit: succeeds and publishes the good examples.

    Beyond `damage`: a FIFO in place of a test image (it hung the run when it was
    opened like a file) and one caption line repeated.
    """
    tmp = tmp_path_factory.mktemp("ingest_ok")
    root = datasets.make_dataset(tmp, NUM_IMAGES, SEED)
    bad = damage(root)
    bad["fifo"] = datasets.split_ids(root, "test")[1]
    replace_with_fifo(root, bad["fifo"])
    datasets.append_caption_line(root, datasets._token_lines(root)[0])
    out_dir, report_dir = tmp / "examples", tmp / "report"
    result = run_ingestion(
        root,
        SPLITS,
        out_dir,
        report_dir,
        make_pipeline,
        max_skipped_fraction=0.5,
        max_image_pixels=IngestConfig().max_image_pixels,
    )
    examples = {split: read_examples(out_dir, split) for split in SPLITS}
    return root, bad, out_dir, report_dir, result, examples


@pytest.mark.timeout(600)  # runs the fixture: a FIFO opened as a file would hang it
def test_damaged_images_are_skipped_as_corrupt(tolerant_run) -> None:
    _, bad, _, report_dir, result, _ = tolerant_run
    report = json.loads((report_dir / contract.INGESTION_REPORT_FILE).read_text())

    assert report == result.report
    assert report["skipped_by_reason"] == {
        layout.CAPTION_DUPLICATE: 1,
        layout.CAPTION_LINE_MALFORMED: 1,
        layout.IMAGE_CORRUPT: 2,
        layout.IMAGE_NOT_REGULAR_FILE: 1,
    }
    examples = report["examples_by_reason"][layout.IMAGE_CORRUPT]
    assert sorted(e.split(":")[0] for e in examples) == sorted([bad["corrupt"], bad["truncated"]])
    assert report["examples_by_reason"][layout.IMAGE_NOT_REGULAR_FILE] == [
        f"{bad['fifo']}: not a regular file but a FIFO"
    ]
    assert report["total_images"] == NUM_IMAGES
    assert report["skipped_images"] == 3
    assert report["total_caption_lines"] == NUM_IMAGES * 5 + 2
    assert report["skipped_caption_lines"] == 2
    assert report["skipped_fraction"]["images"] == pytest.approx(3 / NUM_IMAGES)
    assert report["missing_split_files"] == []
    assert report["max_skipped_fraction"] == 0.5


def test_tolerant_run_writes_every_good_example(tolerant_run) -> None:
    root, bad, out_dir, _, result, examples = tolerant_run
    expected_counts = {
        "train": SPLIT_SIZES["train"] - 1,
        "dev": SPLIT_SIZES["dev"] - 1,
        "test": SPLIT_SIZES["test"] - 1,
    }

    assert result.splits == SPLITS
    assert result.examples_per_split == expected_counts
    assert result.report["examples_per_split"] == expected_counts
    assert {s: len(e) for s, e in examples.items()} == expected_counts
    assert sorted(p.name for p in out_dir.iterdir()) == ["Split-dev", "Split-test", "Split-train"]
    for split in SPLITS:
        ids = {feature(e, "image_id")[0].decode() for e in examples[split]}
        assert ids == set(datasets.split_ids(root, split)) - set(bad.values())


def test_examples_hold_the_file_bytes_size_and_ordered_captions(tolerant_run) -> None:
    root, _, _, _, _, examples = tolerant_run
    plan = datasets.planned(NUM_IMAGES, SEED)
    captions = datasets.expected_captions(NUM_IMAGES, SEED)

    for split_examples in examples.values():
        for example in split_examples:
            image_id = feature(example, "image_id")[0].decode()
            width, height = plan[image_id].size
            assert feature(example, "image/encoded") == [datasets.image_path(root, image_id).read_bytes()]
            assert feature(example, "image/height") == [height]
            assert feature(example, "image/width") == [width]
            assert [c.decode() for c in feature(example, "captions")] == captions[image_id]


def test_no_image_id_in_two_splits(tolerant_run) -> None:
    *_, examples = tolerant_run
    ids = [feature(e, "image_id")[0] for split_examples in examples.values() for e in split_examples]

    assert len(ids) == len(set(ids)) == NUM_IMAGES - 3


def test_staging_is_gone_after_success(tolerant_run) -> None:
    _, _, out_dir, *_ = tolerant_run
    assert not (out_dir / ingest.STAGING_DIR).exists()


def test_default_limit_fails_and_publishes_nothing(tmp_path: Path) -> None:
    root = datasets.make_dataset(tmp_path, NUM_IMAGES, SEED)
    damage(root)
    # The image list repeats an image in two splits too: caught before Beam runs.
    datasets.add_split_entry(root, "test", datasets.split_ids(root, "train")[0] + ".jpg")
    out_dir, report_dir = tmp_path / "examples", tmp_path / "report"
    limit = IngestConfig().max_skipped_fraction
    assert limit == 0.01

    with pytest.raises(IngestionError) as error:
        run_ingestion(
            root,
            SPLITS,
            out_dir,
            report_dir,
            make_pipeline,
            max_skipped_fraction=limit,
            max_image_pixels=IngestConfig().max_image_pixels,
        )

    message = str(error.value)
    assert f"{layout.IMAGE_CORRUPT}=2" in message
    assert f"{layout.IMAGE_IN_SEVERAL_SPLITS}=1" in message
    assert f"{layout.CAPTION_LINE_MALFORMED}=1" in message
    assert "ingest.max_skipped_fraction" in message
    assert "7.3% of images" in message  # 3 of 41 listed images
    assert str(report_dir / contract.INGESTION_REPORT_FILE) in message
    # Nothing a later component could read: no split directories, no staging left over.
    assert list(out_dir.glob("Split-*")) == []
    assert not (out_dir / ingest.STAGING_DIR).exists()
    # The report is there to explain the failure.
    report = json.loads((report_dir / contract.INGESTION_REPORT_FILE).read_text())
    assert report["skipped_by_reason"] == {
        layout.CAPTION_LINE_MALFORMED: 1,
        layout.IMAGE_CORRUPT: 2,
        layout.IMAGE_IN_SEVERAL_SPLITS: 1,
    }


# --------------------------------------------------------------------------
# records.inspect_image / load_record




def test_inspect_image_reads_png_and_jpeg_sizes() -> None:
    assert records.inspect_image(pil_bytes(Image.new("RGB", (7, 5), "red"), "PNG"), 10**6) == (5, 7)
    assert records.inspect_image(pil_bytes(Image.new("RGB", (1, 1), "blue"), "JPEG"), 10**6) == (1, 1)


def test_inspect_image_rejects_empty_and_undecodable_data() -> None:
    with pytest.raises(ValueError, match="empty"):
        records.inspect_image(b"", 10**6)
    with pytest.raises(ValueError, match="cannot decode"):
        records.inspect_image(b"\xff\xd8\xff" + bytes(100), 10**6)
    jpeg = pil_bytes(Image.new("RGB", (64, 48), "green"), "JPEG")
    with pytest.raises(ValueError, match="cannot decode"):
        records.inspect_image(jpeg[: len(jpeg) // 2], 10**6)
    with pytest.raises(ValueError, match="GIF"):
        records.inspect_image(pil_bytes(Image.new("RGB", (4, 4)), "GIF"), 10**6)


def test_inspect_image_rejects_too_many_pixels() -> None:
    jpeg = pil_bytes(Image.new("RGB", (100, 80), "white"), "JPEG")

    assert records.inspect_image(jpeg, max_pixels=100 * 80) == (80, 100)
    with pytest.raises(OverflowError, match="100x80"):
        records.inspect_image(jpeg, max_pixels=100 * 80 - 1)


def test_decompression_bomb_is_too_large_not_corrupt() -> None:
    # 400 megapixels: over Pillow's own bomb limit as well as the configured one.
    with pytest.raises(OverflowError):
        records.inspect_image(png_header_only(20_000, 20_000), IngestConfig().max_image_pixels)


def test_load_record_gives_a_reason_instead_of_raising(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    good.write_bytes(pil_bytes(Image.new("RGB", (30, 20), "black"), "JPEG"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")

    def record(path: Path) -> layout.ImageRecord:
        return layout.ImageRecord(path.stem, str(path), "train", ("A caption .",))

    ok = records.load_record(record(good), max_pixels=10**6)
    assert ok.skip_reason is None
    assert feature(tf.train.Example.FromString(ok.example), "image/width") == [30]
    assert records.load_record(record(good), max_pixels=100).skip_reason == layout.IMAGE_TOO_LARGE
    assert records.load_record(record(bad), max_pixels=10**6).skip_reason == layout.IMAGE_CORRUPT
    missing = records.load_record(record(tmp_path / "gone.jpg"), max_pixels=10**6)
    assert missing.skip_reason == layout.IMAGE_CORRUPT
    assert missing.example is None


def test_load_record_skips_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "null.jpg").symlink_to(os.devnull)

    def load(name: str) -> records.Outcome:
        return records.load_record(
            layout.ImageRecord(Path(name).stem, str(tmp_path / name), "train", ("A caption .",)), max_pixels=10**6
        )

    # Opening the FIFO for reading would wait for a writer: load it in a thread, and if
    # it is still waiting after a few seconds, open the writing end to let it go.
    outcome: list[records.Outcome] = []
    thread = threading.Thread(target=lambda: outcome.append(load("fifo.jpg")), daemon=True)
    thread.start()
    thread.join(timeout=5)
    hung = thread.is_alive()
    if hung:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(timeout=5)
    assert not hung, "load_record blocked on a FIFO"
    assert outcome[0].skip_reason == layout.IMAGE_NOT_REGULAR_FILE
    assert outcome[0].detail == "not a regular file but a FIFO"
    assert outcome[0].example is None
    assert load("folder.jpg").detail == "not a regular file but a directory"
    assert load("null.jpg").detail == "not a regular file but a character device"
    assert {load(n).skip_reason for n in ("folder.jpg", "null.jpg")} == {layout.IMAGE_NOT_REGULAR_FILE}


def test_read_regular_file_refuses_a_path_swapped_for_a_fifo_after_the_check(tmp_path: Path, monkeypatch) -> None:
    # The path is a regular file when stat looks, and a FIFO when it is opened.
    path = tmp_path / "swapped.jpg"
    path.write_bytes(b"jpeg")
    real_open = os.open

    def swap_then_open(name, flags, *args):
        path.unlink()
        os.mkfifo(path)
        return real_open(name, flags, *args)

    fake_os = types.ModuleType("os")
    fake_os.__dict__.update(vars(os))
    fake_os.open = swap_then_open
    monkeypatch.setattr(records, "os", fake_os)
    with pytest.raises(records.NotRegularFile, match="a FIFO"):
        records.read_regular_file(str(path))
