"""Every client mistake in a :predict body is a 400 with TF Serving's words (serving/rest.py).

One case per RestError that rest.py raises, checked at the unit level with its status and
the start of its message, plus the successful parses and responses they sit next to.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from serving import rest
from serving.rest import RestError


def one_input(signature: str) -> list[str]:
    if signature != "serving_default":
        raise RestError(400, f"no signature {signature}")
    return ["images"]


def two_inputs(signature: str) -> list[str]:
    return ["images", "sizes"]


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


ONE = b64(b"one")

BODY_ERRORS = [
    (b"", "JSON Parse error: The document is empty"),
    (b" \n\t", "JSON Parse error: The document is empty"),
    (b'{"instances": ["\xff"]}', "JSON Parse error: the body is not UTF-8"),
    (b'{"instances": [', "JSON Parse error: Expecting value at offset: 15"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON Parse error: the document is nested too deeply"),
    (b"[1]", "JSON Value: [1] Is not object"),
    (body({"signature_name": 3, "instances": [ONE]}), "'signature_name' key must be a string value."),
    (body({"signature_name": "beam", "instances": [ONE]}), "no signature beam"),
    (body({"instances": [ONE], "inputs": [ONE]}), "Not formatted correctly: expecting only one of 'inputs' or 'instances' keys to exist"),
    (body({}), "Missing 'inputs' or 'instances' key"),
    (body({"signature_name": "", "instance": [ONE]}), "Missing 'inputs' or 'instances' key (got 'instance')"),
    (body({"instance": [ONE], "input": []}), "Missing 'inputs' or 'instances' key (got 'input', 'instance')"),
    (body({"instances": ONE}), "Expecting 'instances' to be an list/array"),
    (body({"instances": []}), "No values in 'instances' array"),
    (body({"instances": [ONE, {"images": ONE}]}), "Expecting value at item 1 of 'instances' list, like item 0"),
    (body({"instances": [{"images": ONE}, ONE]}), "Expecting object at item 1 of 'instances' list, like item 0"),
    (body({"instances": [{"images": ONE, "extra": ONE}]}), "Failed to process element: 0 of 'instances' list. JSON object: does not have named input: extra; it must only have keys: images"),
    (body({"instances": [{}]}), "Failed to process element: 0 of 'instances' list. JSON object: it must only have keys: images"),
    (body({"instances": [{"images": 3}]}), "Failed to process element: 0 key: images of 'instances' list: JSON Value: 3 is not of expected type: DT_STRING"),
    (body({"instances": [ONE, 5]}), "Failed to process element: 1 of 'instances' list: JSON Value: 5 is not"),
    (body({"instances": ["x", 5]}), "Failed to process element: 1 of 'instances' list: JSON Value: 5 is not of expected type: DT_STRING"),
    (body({"instances": [{"images": {"b64": 3}}]}), "Failed to process element: 0 key: images of 'instances' list: JSON Value: {\"b64\": 3} not formatted correctly for base64 data"),
    (body({"instances": [{"b64": "a"}]}), "Unable to base64 decode: "),
    (body({"instances": [{"b64": "b25l!"}]}), "Unable to base64 decode: "),
    (body({"instances": [{"b64": "b2-l\u00e9"}]}), "Unable to base64 decode: "),
    (body({"inputs": {}}), "Missing named input: images in 'inputs' object (it has no keys)"),
    (body({"inputs": {"image": [ONE]}}), "Missing named input: images in 'inputs' object (it has image)"),
    (body({"inputs": {"images": []}}), "No values in 'inputs' for images: the batch is empty"),
    (body({"inputs": []}), "No values in 'inputs' for images: the batch is empty"),
    (body({"inputs": {"images": [7]}}), "'inputs' key images element 0: JSON Value: 7 is not of expected type: DT_STRING"),
    (body({"inputs": [ONE, 7]}), "'inputs' element 1: JSON Value: 7 is not of expected type: DT_STRING"),
    (body({"inputs": 7}), "'inputs': JSON Value: 7 is not of expected type: DT_STRING"),
]


@pytest.mark.parametrize(("raw", "message"), BODY_ERRORS)
def test_every_body_error_is_a_400_with_tf_servings_words(raw, message):
    with pytest.raises(RestError) as error:
        rest.parse_predict(raw, one_input)
    assert error.value.status == 400
    assert error.value.message.startswith(message), error.value.message
    assert str(error.value) == error.value.message


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"instances": [ONE]}, "instances is a plain list, but expecting list of objects with keys: images,sizes"),
        ({"inputs": [ONE]}, "inputs is a plain value/list, but expecting an object as multiple input tensors are required"),
        ({"inputs": ONE}, "inputs is a plain value/list"),
        ({"inputs": {"images": [ONE], "sizes": []}}, "No values in 'inputs' for sizes"),
        ({"instances": [{"images": ONE}]}, "Failed to process element: 0 of 'instances' list. JSON object: it must only have keys: images,sizes"),
        ({"inputs": {"sizes": [ONE], "extra": 1}}, "Missing named input: images in 'inputs' object (it has extra,sizes)"),
    ],
)
def test_body_errors_of_a_signature_with_two_inputs_are_400(doc, message):
    with pytest.raises(RestError) as error:
        rest.parse_predict(body(doc), two_inputs)
    assert error.value.status == 400 and error.value.message.startswith(message), error.value.message


def test_long_values_are_shortened_in_messages():
    with pytest.raises(RestError) as error:
        rest.parse_predict(body({"instances": [[1] * 100]}), one_input)
    value = error.value.message.split("JSON Value: ")[1]
    assert value == json.dumps([1] * 100)[:117] + "... is not of expected type: DT_STRING"
    with pytest.raises(RestError) as error:
        rest.parse_predict(body([1] * 40), one_input)
    assert error.value.message == "JSON Value: " + json.dumps([1] * 40) + " Is not object"  # 120 chars: whole
    with pytest.raises(RestError) as error:
        rest.parse_predict(body([1] * 41), one_input)
    assert error.value.message == "JSON Value: " + json.dumps([1] * 41)[:117] + "... Is not object"


def test_two_inputs_by_name_in_both_formats():
    rows = rest.parse_predict(body({"instances": [{"images": ONE, "sizes": "3"}, {"sizes": "4", "images": "x"}]}), two_inputs)
    assert (rows.format, rows.inputs) == (rest.ROW, {"images": [b"one", b"x"], "sizes": [b"3", b"4"]})
    columns = rest.parse_predict(body({"inputs": {"images": ONE, "sizes": ["3"]}, "signature_name": ""}), two_inputs)
    assert (columns.format, columns.inputs) == (rest.COLUMNAR, {"images": [b"one"], "sizes": [b"3"]})
    assert columns.signature_name == "serving_default"


def test_base64_variants():
    assert rest.decode_b64("b25l") == b"one"
    assert rest.decode_b64("b2\n5l") == b"one"
    assert rest.decode_b64("b24") == b"on"
    assert rest.decode_b64("-_8") == b"\xfb\xff"
    assert rest.decode_b64("+/8=") == b"\xfb\xff"
    assert rest.decode_b64("") == b""
    assert rest.decode_b64("b25lYQ") == b"onea"  # two padding characters restored
    assert rest.decode_b64("--8") == b"\xfb\xef"  # URL-safe with only '-'
    assert rest.decode_b64("__8") == b"\xff\xff"  # URL-safe with only '_'


def test_routes_and_requests_are_immutable_values():
    import dataclasses

    request = rest.parse_predict(body({"instances": [ONE]}), one_input)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.format = rest.COLUMNAR
    with pytest.raises(dataclasses.FrozenInstanceError):
        rest.parse_route("/v1/models/captioner").model = "other"


def test_a_lone_b64_object_is_a_batch_of_one():
    request = rest.parse_predict(body({"inputs": ONE}), one_input)
    assert request.inputs == {"images": [b"one"]}
    request = rest.parse_predict(body({"instances": [ONE, "two"]}), one_input)
    assert request.inputs == {"images": [b"one", b"two"]}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/models/captioner/labels/stable", rest.Route("captioner", label="stable")),
        ("/v1/models/captioner/metadata", rest.Route("captioner", metadata=True)),
        ("/v1/models/captioner/versions/0", rest.Route("captioner", version=0)),
        ("/v1/models/captioner:classify", rest.Route("captioner", verb="classify")),
        ("/v1/models/captioner/", None),
        ("/v1/models/", None),
    ],
)
def test_routes(path, expected):
    assert rest.parse_route(path) == expected


def test_responses():
    floats = {"scores": np.array([[0.1, float("nan")]], dtype=np.float32)}
    predictions = rest.format_predict_response(floats, rest.ROW)["predictions"]
    assert predictions[0][0] == 0.1 and np.isnan(predictions[0][1])
    ints = {"ids": np.array([[1, 2]], dtype=np.int64), "caption": [b"a"]}
    assert rest.format_predict_response(ints, rest.ROW) == {"predictions": [{"caption": "a", "ids": [1, 2]}]}
    assert rest.format_predict_response(ints, rest.COLUMNAR) == {"outputs": {"caption": ["a"], "ids": [[1, 2]]}}
    assert rest.format_predict_response({"x_bytes": [b"ab"]}, rest.ROW) == {"predictions": [{"b64": "YWI="}]}
    assert rest.format_predict_response({"x": [float("inf")]}, rest.ROW) == {"predictions": [float("inf")]}
    with pytest.raises(ValueError, match=r"different batch sizes: \[1, 2\]"):
        rest.format_predict_response({"a": [1], "b": [1, 2]}, rest.ROW)
    assert rest.dumps({"caption": "é"}) == '{"caption": "é"}'.encode()
