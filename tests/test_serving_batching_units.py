"""Unit tests of server-side batching without a model: the batching parameters file (the
committed one, and every kind of mistake in one), the scheduler's queue limit and padding
with a plain Python job, and how a batch's outputs are split back per request."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from serving import batching_parameters
from serving.batching import BatchScheduler, Job
from serving.batching_parameters import BatchingConfigError, BatchingParameters
from serving.rest import RestError
from serving.servable import join_batches, split_batches

SERVING = Path(__file__).resolve().parent.parent / "serving"


def test_the_committed_file_parses_and_fits_the_clients():
    params = batching_parameters.read(SERVING / "batching.config")
    assert params.execution_batch_size == params.max_execution_batch_size == 8
    assert params.enable_large_batch_splitting and params.max_batch_size == 256  # the CLI's and the page's requests fit
    assert params.num_batch_threads == 1 and params.batch_timeout_micros > 0
    assert params.max_enqueued_batches * params.execution_batch_size >= params.max_batch_size


def test_wrapped_values_comments_and_lists_parse_as_in_tf_serving():
    params = batching_parameters.parse(
        "# a comment\nmax_batch_size { value: 8 }\nbatch_timeout_micros: { value: 1500 }\n"
        "allowed_batch_sizes: [2, 4]\nallowed_batch_sizes: 8\nthread_pool_name { value: 'pool' }\n"
    )
    assert (params.max_batch_size, params.batch_timeout_micros, params.allowed_batch_sizes) == (8, 1500, (2, 4, 8))
    assert params.thread_pool_name == "pool" and params.max_enqueued_batches == 10  # TF Serving's default
    assert batching_parameters.parse("").execution_batch_size == 1000


@pytest.mark.parametrize(
    "text,message",
    [
        ("max_batch_size { value: 8 }\nmax_batch_sise { value: 8 }", 'f.config:2:1 : Message type "tensorflow.serving.BatchingParameters" has no field named "max_batch_sise"'),
        ("max_batch_size: 8", 'f.config:1:17 : \'max_batch_size: 8\': Expected "{"'),
        ("max_batch_size { value: 8 }\nmax_batch_size { value: 9 }", 'should not have multiple "max_batch_size" fields'),
        ("max_batch_size { value: eight }", "Couldn't parse integer: eight"),
        ("max_batch_size { valu: 8 }", 'has no field named "valu"'),
        ("max_batch_size { value: 0 }", "f.config: max_batch_size must be at least 1, got 0"),
        ("num_batch_threads { value: -2 }", "num_batch_threads must be at least 1, got -2"),
        ("batch_timeout_micros { value: -1 }", "batch_timeout_micros must not be negative, got -1"),
        ("max_batch_size { value: 8 } allowed_batch_sizes: [4, 2, 8]", "allowed_batch_sizes must be positive and increasing, got [4, 2, 8]"),
        ("max_batch_size { value: 8 } allowed_batch_sizes: [2, 4]", "the last of allowed_batch_sizes must equal max_batch_size; last entry was 4, expected 8"),
        ("max_batch_size { value: 8 } enable_large_batch_splitting { value: true } max_execution_batch_size { value: 16 }",
         "max_execution_batch_size (16) must not be over max_batch_size (8)"),
    ],
)
def test_a_bad_file_is_refused_with_where_and_why(text, message):
    with pytest.raises(BatchingConfigError) as error:
        batching_parameters.parse(text, "f.config")
    assert message in str(error.value)


def test_an_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(BatchingConfigError, match="cannot read .*missing.config"):
        batching_parameters.read(tmp_path / "missing.config")


def test_the_server_flags_check_the_file_and_need_enable_batching(tmp_path, capsys):
    from serving import local_server

    bad = tmp_path / "bad.config"
    bad.write_text("max_batch_size { value: 8 }\nbatch_timeout { value: 10 }\n")
    for argv, text in [
        (["--enable-batching", "--batching-parameters-file", str(bad)], f'{bad}:2:1 : Message type "tensorflow.serving.BatchingParameters" has no field named "batch_timeout"'),
        (["--batching-parameters-file", str(SERVING / "batching.config")], "--batching-parameters-file needs --enable-batching"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            local_server.parse_args(argv)
        assert exit_info.value.code == 2
        assert text in capsys.readouterr().err.strip().splitlines()[-1]
    args = local_server.parse_args(["--enable-batching", "--batching-parameters-file", str(SERVING / "batching.config")])
    assert args.batching_parameters_file.execution_batch_size == 8
    assert local_server.parse_args([]).enable_batching is False  # no batching unless asked


# ----------------------------------------------------------------------------------------------
# The scheduler, with a plain Python job


def echo_job(calls: list, gate: threading.Event | None = None) -> Job:
    """Outputs the inputs back (one row per image); records each call's batch; waits for `gate`."""

    def execute(inputs):
        calls.append(list(inputs["x"]))
        if gate is not None:
            gate.wait(10)
        if b"bad" in inputs["x"]:
            raise RestError(400, "bad input")
        return {"y": np.array(inputs["x"], dtype=object)}

    def split(outputs, sizes):
        return [{"y": part} for part in np.split(outputs["y"], np.cumsum(sizes)[:-1])]

    return Job(key="echo", execute=execute, split=split)


def submit_all(scheduler: BatchScheduler, job: Job, requests: list[list[bytes]]) -> list:
    results: list = [None] * len(requests)

    def run(i):
        try:
            results[i] = scheduler.submit(job, {"x": requests[i]}).outputs["y"].tolist()
        except RestError as error:
            results[i] = error.status

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    return threads, results


def test_a_full_queue_answers_503_and_the_others_are_served():
    """One batch running (held at the gate), one waiting: with max_enqueued_batches 1 a third
    request that needs a new batch is refused; the queued ones still get their own rows."""
    scheduler = BatchScheduler(BatchingParameters(max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=1, num_batch_threads=1))
    calls, gate = [], threading.Event()
    job = echo_job(calls, gate)
    try:
        threads, results = submit_all(scheduler, job, [[b"a"]])
        while not calls:  # the first batch is running
            threading.Event().wait(0.01)
        more, queued = submit_all(scheduler, job, [[b"b"]])
        while not scheduler._queues:
            threading.Event().wait(0.01)
        with pytest.raises(RestError) as refused:
            scheduler.submit(job, {"x": [b"c"]})
        assert refused.value.status == 503 and "queue" in refused.value.message
        gate.set()
        for thread in threads + more:
            thread.join(10)
        assert results == [[b"a"]] and queued == [[b"b"]] and calls == [[b"a"], [b"b"]]
    finally:
        gate.set()
        scheduler.stop()


def test_batches_pad_up_to_an_allowed_size_and_a_failed_batch_is_rerun_per_request():
    scheduler = BatchScheduler(BatchingParameters(max_batch_size=4, batch_timeout_micros=2_000_000, allowed_batch_sizes=(2, 4), num_batch_threads=1))
    calls: list = []
    job = echo_job(calls)
    try:
        threads, results = submit_all(scheduler, job, [[b"a"], [b"b", b"c"], [b"d"]])  # full at 4
        for thread in threads:
            thread.join(10)
        assert sorted(map(len, calls)) == [4] and sorted(results) == [[b"a"], [b"b", b"c"], [b"d"]]
        calls.clear()
        threads, results = submit_all(scheduler, job, [[b"e"], [b"bad"], [b"f", b"g"]])
        for thread in threads:
            thread.join(10)
        assert sorted(results, key=str) == sorted([[b"e"], 400, [b"f", b"g"]], key=str)
        assert len(calls) == 4 and all(len(call) in (2, 4) for call in calls)  # alone: padded to 2
    finally:
        scheduler.stop()


# ----------------------------------------------------------------------------------------------
# Splitting a batch's outputs back per request


def test_split_batches_gives_each_request_its_rows_cut_to_its_own_length():
    """A batch of a 2-word caption and a 1-word one, padded to 3 positions (the <end> of the
    longest): each part keeps the positions up to its own <end>, as its own call gives them."""
    words = np.array([[b"a", b"dog", b""], [b"man", b"", b""], [b"", b"", b""]], dtype=object)
    probabilities = np.array([[0.5, 0.4, 0.9], [0.6, 0.8, 0.0], [0.0, 0.0, 0.0]], np.float32)
    attention = np.stack([np.ones((3, 4)) * p[:, None] for p in probabilities]).astype(np.float32)
    grid = np.array([[2, 2]] * 3, np.int32)
    outputs = {"words": words, "word_probabilities": probabilities, "attention": attention, "grid_size": grid,
               "caption": np.array([b"a dog", b"man", b""], dtype=object)}
    axes = {"words": (1,), "word_probabilities": (1,), "attention": (1, 2), "grid_size": (), "caption": ()}
    first, second = split_batches(outputs, [1, 2], axes)
    assert first["words"].tolist() == [[b"a", b"dog", b""]] and first["attention"].shape == (1, 3, 4)
    assert second["words"].tolist() == [[b"man", b""], [b"", b""]]  # its <end> kept, the batch's padding cut
    assert np.allclose(second["word_probabilities"], [[0.6, 0.8], [0.0, 0.0]])
    assert second["attention"].shape == (2, 2, 4) and second["grid_size"].tolist() == [[2, 2], [2, 2]]
    assert second["caption"].tolist() == [b"man", b""]
    rejoined = join_batches([first["words"], second["words"]])
    assert rejoined.tolist() == words.tolist()  # join_batches undoes it
