"""Unit tests of the serving pieces that need no model: REST protocol, version policy,
error cleaning, the `make serve` launcher and the committed serving configs."""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from serving import rest, tf_serving
from serving.rest import RestError
from serving.versions import AVAILABLE, END, LOADING, ModelVersions

SERVING = Path(__file__).resolve().parent.parent / "serving"


def images_only(signature: str) -> list[str]:
    if signature not in ("serving_default", "beam_search"):
        raise RestError(400, f"no signature {signature}")
    return ["images"]


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


# ----------------------------------------------------------------------------------------------
# REST protocol


@pytest.mark.parametrize(
    "path,expected",
    [
        ("/v1/models/captioner", rest.Route("captioner")),
        ("/v1/models/captioner:predict", rest.Route("captioner", verb="predict")),
        ("/v1/models/captioner/versions/12:predict", rest.Route("captioner", version=12, verb="predict")),
        ("/v1/models/captioner/labels/production:predict", rest.Route("captioner", label="production", verb="predict")),
        ("/v1/models/captioner/versions/3/metadata", rest.Route("captioner", version=3, metadata=True)),
        ("/v1/models/captioner/versions/x:predict", None),
        ("/v2/models/captioner", None),
        # TF Serving matches its URL patterns case-insensitively; names and verbs keep their case.
        ("/V1/Models/captioner/VERSIONS/2:predict", rest.Route("captioner", version=2, verb="predict")),
        ("/v1/models/captioner/LABELS/Stable/METADATA", rest.Route("captioner", label="Stable", metadata=True)),
        ("/v1/models/captioner:PREDICT", rest.Route("captioner", verb="PREDICT")),  # not a verb: malformed
        ("/v1/models/captioner:explode", rest.Route("captioner", verb="explode")),
        ("/v1/models", rest.Route("")),  # "Missing model name in request."
    ],
)
def test_parse_route(path, expected):
    assert rest.parse_route(path) == expected


def test_api_paths_and_tf_serving_messages():
    assert rest.is_api_path("/v1/models/x") and rest.is_api_path("/V1/anything") and rest.is_api_path("/v1")
    assert not rest.is_api_path("/v10/models") and not rest.is_api_path("/index.html")
    error = rest.malformed("GET", "/v1/models/captioner:predict")
    assert (error.status, error.message) == (400, "Malformed request: GET /v1/models/captioner:predict")
    with pytest.raises(RestError) as huge:
        rest.parse_route("/v1/models/captioner/versions/99999999999999999999")
    assert (huge.value.status, huge.value.message) == (400, "Failed to convert version: 99999999999999999999 to numeric.")


@pytest.mark.parametrize(
    "body,fmt",
    [
        ({"instances": [b64(b"one"), b64(b"two")]}, rest.ROW),
        ({"instances": [{"images": b64(b"one")}, {"images": b64(b"two")}]}, rest.ROW),
        ({"instances": ["one", "two"]}, rest.ROW),  # plain strings are their UTF-8 bytes
        ({"inputs": {"images": [b64(b"one"), b64(b"two")]}}, rest.COLUMNAR),
        ({"inputs": [b64(b"one"), b64(b"two")]}, rest.COLUMNAR),
    ],
)
def test_parse_predict_formats(body, fmt):
    request = rest.parse_predict(json.dumps(body).encode(), images_only)
    assert request.format == fmt
    assert request.inputs == {"images": [b"one", b"two"]}
    assert request.signature_name == "serving_default"


def test_parse_predict_reads_signature_name_and_unpadded_or_urlsafe_base64():
    body = b'{"signature_name": "beam_search", "instances": [{"b64": "b25l"}, {"b64": "-_8"}]}'
    request = rest.parse_predict(body, images_only)
    assert request.signature_name == "beam_search"
    assert request.inputs["images"] == [b"one", b"\xfb\xff"]


@pytest.mark.parametrize(
    "body,text",
    [
        (b"", "empty"),
        (b"{", "JSON Parse error"),
        (b"3", "Is not object"),
        (b'{"instances": [{"b64": "a"}]}', "base64"),
        (b'{"instances": [{"b64": 3}]}', "named input: b64"),
        (b'{"instances": [{"b64": "b25l"}, {"images": {"b64": "b25l"}}]}', "like item 0"),
        (b'{"instances": [null]}', "DT_STRING"),
        (b'{"signature_name": "greedy", "instances": ["x"]}', "no signature greedy"),
        (b'{"inputs": {}}', "Missing named input: images"),
        (b'{"inputs": []}', "empty"),
    ],
)
def test_parse_predict_errors_are_400(body, text):
    with pytest.raises(RestError) as error:
        rest.parse_predict(body, images_only)
    assert error.value.status == 400 and text in error.value.message


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": ["\\ud800"]}',
        b'{"instances": [{"b64": "b25l", "x": "\\udc00"}]}',
        b'{"signature_name": "\\ud800", "instances": ["x"]}',
        b'{"\\ud800": 1, "instances": ["x"]}',
        b'{"instances": [{"\\udbff": {"b64": "b25l"}}]}',
    ],
    ids=["instance", "value-beside-b64", "signature_name", "top-level-key", "instance-key"],
)
def test_lone_surrogate_escapes_are_a_400_as_in_rapidjson(body):
    with pytest.raises(RestError) as error:
        rest.parse_predict(body, images_only)
    assert error.value.status == 400 and error.value.message == "JSON Parse error: The surrogate pair in string is invalid."


def test_a_surrogate_pair_is_text_and_any_answer_is_valid_utf8():
    request = rest.parse_predict(b'{"instances": ["\\ud83d\\ude00"]}', images_only)
    assert request.inputs["images"] == ["\U0001f600".encode()]
    assert json.loads(rest.dumps({"error": "bad \ud800"}).decode("utf-8")) == {"error": "bad \ud800"}


@pytest.mark.parametrize("text", ["b25l*", "-_8!", "-_8$$", "a-b+c", "b2 5l\u00e9"])
def test_base64_with_junk_is_refused_not_dropped(text):
    with pytest.raises(RestError) as error:
        rest.decode_b64(text)
    assert error.value.status == 400 and "Unable to base64 decode" in error.value.message


def test_response_formats_follow_tf_serving():
    one = {"caption": np.array([b"a red circle", b"a blue one"], dtype=object)}
    assert rest.format_predict_response(one, rest.ROW) == {"predictions": ["a red circle", "a blue one"]}
    assert rest.format_predict_response(one, rest.COLUMNAR) == {"outputs": ["a red circle", "a blue one"]}
    many = {
        "caption": np.array([b"x"], dtype=object),
        "scores": np.array([[-0.37342947721481323, -1.5]], dtype=np.float32),
        "thumb_bytes": np.array([b"\x00\x01"], dtype=object),
    }
    assert rest.format_predict_response(many, rest.ROW) == {
        "predictions": [{"caption": "x", "scores": [-0.37342948, -1.5], "thumb_bytes": {"b64": "AAE="}}]
    }
    assert rest.format_predict_response(many, rest.COLUMNAR)["outputs"]["scores"] == [[-0.37342948, -1.5]]
    # Bytes that are not UTF-8 text come back base64'd rather than as invalid JSON.
    assert rest.format_predict_response({"caption": np.array([b"\xff"])}, rest.ROW) == {"predictions": [{"b64": "/w=="}]}


def test_clean_tf_error_keeps_the_ops_own_words():
    from serving.servable import clean_tf_error

    assertion = (
        "Graph execution error:\n\nDetected at node map/while/assert_greater/Assert/Assert defined at (most recent call last):\n"
        "<stack traces unavailable>\nassertion failed: [image bytes are empty] [Condition x > y did not hold element-wise:] "
        "[x (map/while/StringLength:0) = ] [0]\n\t [[{{node map/while/assert_greater/Assert/Assert}}]] [Op:__inference_signature_wrapper_1]"
    )
    decode = (
        "Graph execution error:\n\nDetected at node map/while/decode_image/DecodeImage defined at (most recent call last):\n"
        "<stack traces unavailable>\nUnknown image file format. One of JPEG, PNG, GIF, BMP required.\n"
        "\t [[{{node map/while/decode_image/DecodeImage}}]] [Op:__inference_signature_wrapper_12737]"
    )
    assert clean_tf_error(assertion) == "image bytes are empty"
    assert clean_tf_error(decode) == "Unknown image file format. One of JPEG, PNG, GIF, BMP required."
    assert clean_tf_error("plain message") == "plain message"


# ----------------------------------------------------------------------------------------------
# Version policy (a fake loader: no TensorFlow)


class FakeLoader:
    def __init__(self):
        self.loaded: list[int] = []
        self.broken: set[int] = set()

    def __call__(self, version: int, path: Path):
        if version in self.broken:
            raise ValueError(f"cannot load {path.name}")
        self.loaded.append(version)
        return f"servable-{version}"


def write_version(base: Path, version: int, content: bytes = b"pb") -> None:
    (base / str(version) / "variables").mkdir(parents=True, exist_ok=True)
    (base / str(version) / "saved_model.pb").write_bytes(content)


def states(versions: ModelVersions) -> dict[str, str]:
    return {s["version"]: s["state"] for s in versions.status()["model_version_status"]}


def test_loads_newest_at_start_then_a_new_version_once_its_files_settle(tmp_path):
    write_version(tmp_path, 1)
    write_version(tmp_path, 2)
    (tmp_path / "not-a-version").mkdir()
    (tmp_path / "7").mkdir()  # no saved_model.pb yet: not a version
    loader = FakeLoader()
    versions = ModelVersions("captioner", tmp_path, loader)
    versions.scan_once()
    assert loader.loaded == [2] and states(versions) == {"2": AVAILABLE}
    assert versions.servable() == "servable-2"

    write_version(tmp_path, 3)
    versions.scan_once()  # first seen: wait for a second look with the same files
    assert loader.loaded == [2]
    versions.scan_once()
    assert loader.loaded == [2, 3]
    assert states(versions) == {"3": AVAILABLE, "2": END}
    assert versions.servable() == "servable-3"
    with pytest.raises(RestError) as error:
        versions.servable(version=2)
    assert error.value.status == 404


def test_a_broken_new_version_leaves_the_old_one_serving_and_is_retried_when_it_changes(tmp_path):
    write_version(tmp_path, 1)
    loader = FakeLoader()
    loader.broken = {2}
    versions = ModelVersions("captioner", tmp_path, loader)
    versions.scan_once()
    write_version(tmp_path, 2)
    versions.scan_once()
    versions.scan_once()
    status = {s["version"]: s for s in versions.status()["model_version_status"]}
    assert status["2"]["state"] == END and "cannot load 2" in status["2"]["status"]["error_message"]
    assert status["1"]["state"] == AVAILABLE and versions.servable() == "servable-1"
    versions.scan_once()
    assert loader.loaded == [1]  # unchanged files: no retry
    loader.broken = set()
    write_version(tmp_path, 2, b"fixed pb")
    versions.scan_once()
    versions.scan_once()
    assert versions.servable() == "servable-2"


def test_labels_pin_versions_and_production_floats(tmp_path):
    for v in (1, 2, 3):
        write_version(tmp_path, v)
    versions = ModelVersions("captioner", tmp_path, FakeLoader(), labels={"stable": 1})
    versions.scan_once()
    assert states(versions) == {"3": AVAILABLE, "1": AVAILABLE}
    assert versions.servable(label="stable") == "servable-1"
    assert versions.servable(label="production") == "servable-3"
    with pytest.raises(RestError) as error:
        versions.servable(label="canary")
    assert error.value.status == 400  # TF Serving: InvalidArgument "Unrecognized servable version label"
    assert "Unrecognized servable version label: canary" in error.value.message


def test_a_corrupt_newest_version_at_start_leaves_the_newest_loadable_one_serving(tmp_path):
    for v in (1, 2, 3):
        write_version(tmp_path, v)
    loader = FakeLoader()
    loader.broken = {3}
    versions = ModelVersions("captioner", tmp_path, loader)
    versions.scan_once()  # a restart: the first scan
    assert versions.servable() == "servable-2"
    status = {s["version"]: s for s in versions.status()["model_version_status"]}
    assert status["2"]["state"] == AVAILABLE
    assert status["3"]["state"] == END and "cannot load 3" in status["3"]["status"]["error_message"]
    assert str(tmp_path) not in json.dumps(versions.status())
    versions.scan_once()
    assert loader.loaded == [2]  # 1 stays unloaded (one version wanted), 3 is not retried


def test_no_loadable_version_says_why(tmp_path):
    write_version(tmp_path, 1)
    loader = FakeLoader()
    loader.broken = {1}
    versions = ModelVersions("captioner", tmp_path, loader)
    versions.scan_once()
    with pytest.raises(RestError) as error:
        versions.servable()
    assert error.value.status == 404 and "version 1 failed to load" in error.value.message
    assert str(tmp_path) not in error.value.message


def test_removed_version_is_unloaded_and_missing_base_is_404(tmp_path):
    base = tmp_path / "captioner"
    versions = ModelVersions("captioner", base, FakeLoader())
    versions.scan_once()
    with pytest.raises(RestError) as error:
        versions.servable()
    assert error.value.status == 404
    write_version(base, 1)
    versions.scan_once()
    versions.scan_once()
    assert versions.servable() == "servable-1"
    shutil.rmtree(base / "1")
    versions.scan_once()
    assert states(versions) == {"1": END}


def test_status_shows_loading_while_a_version_loads(tmp_path):
    write_version(tmp_path, 1)
    seen = {}

    def loader(version, path):
        seen["during"] = states(versions)
        return "servable"

    versions = ModelVersions("captioner", tmp_path, loader)
    versions.scan_once()
    assert seen["during"] == {"1": LOADING}


# ----------------------------------------------------------------------------------------------
# `make serve` and the committed configs


def launcher_args(tmp_path: Path) -> argparse.Namespace:
    return tf_serving.build_parser().parse_args(["--models-dir", str(tmp_path / "models")])


def test_serve_uses_the_binary_with_absolute_base_path(tmp_path):
    command, _ = tf_serving.build_command(launcher_args(tmp_path), which=lambda name: "/opt/tfs/tensorflow_model_server")
    assert command[0] == "/opt/tfs/tensorflow_model_server"
    assert "--rest_api_port=8501" in command
    config = Path(next(arg for arg in command if arg.startswith("--model_config_file=")).split("=", 1)[1])
    assert f'base_path: "{(tmp_path / "models" / "captioner").resolve()}"' in config.read_text()
    assert "--enable_batching" in command
    assert f"--batching_parameters_file={(SERVING / 'batching.config').resolve()}" in command
    args = tf_serving.build_parser().parse_args(["--models-dir", str(tmp_path / "models"), "--no-batching"])
    command, _ = tf_serving.build_command(args, which=lambda name: "/opt/tfs/tensorflow_model_server")
    assert not [arg for arg in command if "batching" in arg]


def test_serve_falls_back_to_docker_then_explains(tmp_path):
    args = launcher_args(tmp_path)
    command, _ = tf_serving.build_command(args, which=lambda name: None, docker=lambda: (True, ""))
    assert command[:2] == ["docker", "run"] and "127.0.0.1:8501:8501" in command
    assert f"{(tmp_path / 'models').resolve()}:/models:ro" in command
    assert f"{(SERVING / 'batching.config').resolve()}:/config/batching.config:ro" in command
    assert command[-2:] == ["--enable_batching", "--batching_parameters_file=/config/batching.config"]
    command, message = tf_serving.build_command(args, which=lambda name: None, docker=lambda: (False, "`docker info` failed: no daemon"))
    assert command is None
    assert "tensorflow_model_server" in message and "no daemon" in message and "make serve-local" in message


def test_serve_refuses_a_bad_batching_file_before_starting(tmp_path, capsys):
    bad = tmp_path / "batching.config"
    bad.write_text("max_batch_size { value: 0 }\n")
    assert tf_serving.main(["--models-dir", str(tmp_path), "--batching-parameters-file", str(bad), "--dry-run"]) == 1
    assert capsys.readouterr().err.strip() == f"error: {bad}: max_batch_size must be at least 1, got 0"


def test_docker_answers_reports_why_not(monkeypatch):
    monkeypatch.setattr(tf_serving.shutil, "which", lambda name: "/usr/bin/docker")
    failed = subprocess.CompletedProcess(["docker", "info"], 1, "", "Cannot connect to the Docker daemon.\n")
    assert tf_serving.docker_answers(run=lambda *a, **k: failed) == (False, "`docker info` failed: Cannot connect to the Docker daemon.")
    ok = subprocess.CompletedProcess(["docker", "info"], 0, "Server: ...", "")
    assert tf_serving.docker_answers(run=lambda *a, **k: ok) == (True, "")


def test_models_config_is_a_valid_model_server_config():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse((SERVING / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("captioner", "/models/captioner", "tensorflow")
    assert model.model_version_policy.latest.num_versions == 1


def test_compose_file_wires_the_three_services():
    compose = yaml.safe_load((SERVING / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"tf-serving", "mlflow", "web"}
    assert "127.0.0.1:8501:8501" in services["tf-serving"]["ports"]
    assert "./models:/models:ro" in services["tf-serving"]["volumes"]
    assert "./batching.config:/config/batching.config:ro" in services["tf-serving"]["volumes"]
    assert {"--enable_batching", "--batching_parameters_file=/config/batching.config"} <= set(services["tf-serving"]["command"])
    assert "127.0.0.1:5000:5000" in services["mlflow"]["ports"]
    assert "sqlite:" in " ".join(services["mlflow"]["command"])
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and source != "./models" and source != "./web":
                assert (SERVING / source).exists(), volume


# ----------------------------------------------------------------------------------------------
# The local server's flags


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--poll-seconds", "-1"), ("--poll-seconds", "0"), ("--poll-seconds", "nan"), ("--num-versions", "0"),
        ("--port", "99999"), ("--port", "-1"), ("--port", "http"), ("--max-body-mb", "0"), ("--max-batch-size", "0"),
        ("--header-timeout", "inf"), ("--body-timeout", "-3"), ("--max-connections", "0"), ("--label", "stable=²"),
        ("--log-level", "LOUD"),
    ],
)
def test_bad_server_flags_are_a_one_line_error(flag, value, capsys):
    from serving import local_server

    with pytest.raises(SystemExit) as exit_info:
        local_server.build_parser().parse_args([flag, value])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("python -m serving.local_server: error: argument") and flag in lines[-1]
    assert "Traceback" not in "\n".join(lines)


def test_good_server_flags_parse():
    from serving import local_server

    args = local_server.build_parser().parse_args(
        ["--port", "0", "--poll-seconds", "0.5", "--num-versions", "2", "--max-body-mb", "0.5",
         "--header-timeout", "5", "--body-timeout", "7", "--max-connections", "3", "--enable-cors-support",
         "--log-level", "debug"]
    )
    assert (args.port, args.poll_seconds, args.num_versions, args.max_body_mb) == (0, 0.5, 2, 0.5)
    assert (args.header_timeout, args.body_timeout, args.max_connections, args.enable_cors_support) == (5, 7, 3, True)
    assert args.log_level == "DEBUG"


def test_joined_graph_calls_pad_each_call_to_the_longest_caption():
    """A batch split into graph calls (--max-execution-batch-size) gets captions of different
    lengths per call: words and attention rows are padded as the model pads past <end>."""
    from serving.servable import join_batches

    words = join_batches([np.array([[b"a", b"dog"]], dtype=object), np.array([[b"a", b"man", b"runs"], [b"", b"", b""]], dtype=object)])
    assert words.tolist() == [[b"a", b"dog", b""], [b"a", b"man", b"runs"], [b"", b"", b""]]
    weights = join_batches([np.ones((1, 2, 4), np.float32), np.full((1, 3, 4), 0.5, np.float32)])
    assert weights.shape == (2, 3, 4) and weights.dtype == np.float32
    assert weights[0].tolist() == [[1.0] * 4, [1.0] * 4, [0.0] * 4] and weights[1].tolist() == [[0.5] * 4] * 3
    captions = join_batches([np.array([b"x"], dtype=object), np.array([b"y", b"z"], dtype=object)])
    assert captions.tolist() == [b"x", b"y", b"z"]
