"""The web page (serving/web/) in a real headless Chromium against the real local REST server.

`python -m serving.local_server` runs as a subprocess on a free port with a tiny exported
model (tests/serving_models.py) and serves the page beside the API; Playwright drives
Debian's Chromium at /usr/bin/chromium (`make test` installs it with tools/ensure-chromium.sh;
Playwright's own browser download is not used). Every wait is bounded, and the server and
the browser are stopped whatever happens.
"""

from __future__ import annotations

import base64
import io
import json
import math
import socket
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from components.caption_pusher.card import model_card
from tests.serving_models import REPO, local_server_process, push_version, tiny_model

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
]
VERSION = 7  # not 1, so a version shown by accident (a default, an index) would not pass
WAIT_MS = 60_000  # any single wait in the browser


def photo(rgb=(0, 150, 0), sun=(240, 220, 30), size=(96, 72)) -> bytes:
    """A JPEG of a green field with a small sun: mostly pure green, which the tiny untrained model
    captions with words (it gives most other images an empty caption)."""
    image = Image.new("RGB", size, rgb)
    ImageDraw.Draw(image).ellipse((size[0] - 26, 6, size[0] - 8, 24), fill=sun)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


GOOD = photo()
OTHER = photo(rgb=(10, 200, 10), sun=(250, 250, 250))
NOT_AN_IMAGE = b"this is text, not a JPEG\n"


# ----------------------------------------------------------------------------------------------
# The server, its REST API called directly, and the browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> str:
    base = tmp_path_factory.mktemp("web_models") / "captioner"
    version_dir = push_version(tiny_model(tmp_path_factory.getbasetemp()), base, VERSION)
    # The card CaptionPusher stores with a version, as a smoke (synthetic) run writes it.
    card = model_card(
        {"profile": "smoke", "dataset": "synthetic", "backbone": "efficientnet_lite0", "decoder": "attention"},
        {"bleu_4": 0.9064, "cider": 3.5, "bleu_1": None}, model_id=11,
    )
    (version_dir / "assets.extra").mkdir(exist_ok=True)
    (version_dir / "assets.extra" / "captioner_push.json").write_text(json.dumps({"card": card}))
    log = tmp_path_factory.getbasetemp() / "web_server.log"
    with local_server_process(base, log, "--static-dir", str(REPO / "serving" / "web")) as url:
        yield url


def rest_predict(url: str, image: bytes, signature: str = "serving_default") -> dict:
    """One image through the REST API directly, as a dict (a bare caption string becomes {"caption": ...})."""
    body = json.dumps({"signature_name": signature, "instances": [{"b64": base64.b64encode(image).decode()}]})
    request = urllib.request.Request(f"{url}/v1/models/captioner:predict", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        (prediction,) = json.loads(response.read())["predictions"]
    return prediction if isinstance(prediction, dict) else {"caption": prediction}


def rest_served_version(url: str) -> int:
    with urllib.request.urlopen(f"{url}/v1/models/captioner", timeout=30) as response:
        states = json.loads(response.read())["model_version_status"]
    return max(int(state["version"]) for state in states if state["state"] == "AVAILABLE")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run tools/ensure-chromium.sh (make test does) "
                    "or install Debian's chromium package", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=WAIT_MS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture()
def page(browser):
    """A fresh browser context per test; JavaScript errors on the page fail the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(WAIT_MS)
    context.set_default_navigation_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def predict_requests(page) -> list[dict]:
    """Records the body of every :predict request the page sends (parsed JSON), in order."""
    sent: list[dict] = []
    page.on("request", lambda request: sent.append(json.loads(request.post_data))
            if request.url.endswith(":predict") else None)
    return sent


def wait_until_settled(page, count: int) -> None:
    """Until `count` results are on the page and none is still pending."""
    page.wait_for_function(
        """(count) => {
            const items = document.querySelectorAll('#results .result');
            return items.length === count && [...items].every((item) => item.dataset.state !== 'pending');
        }""",
        arg=count, timeout=WAIT_MS,
    )


def drop_files(page, files: list[tuple[str, bytes]]) -> None:
    """Drops files on the drop zone the way a browser does (dragenter, dragover, drop with a DataTransfer)."""
    page.evaluate(
        """(files) => {
            const transfer = new DataTransfer();
            for (const file of files) {
                const bytes = Uint8Array.from(atob(file.b64), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], file.name, { type: 'image/jpeg' }));
            }
            const zone = document.querySelector('#drop-zone');
            for (const type of ['dragenter', 'dragover', 'drop']) {
                zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
            }
        }""",
        [{"name": name, "b64": base64.b64encode(data).decode()} for name, data in files],
    )


# ----------------------------------------------------------------------------------------------


def test_the_page_says_what_the_model_is_and_warns_about_synthetic_training(server, page):
    with urllib.request.urlopen(f"{server}/model-card.json", timeout=30) as response:
        card = json.loads(response.read())
    assert card["version"] == VERSION and card["model_id"] == 11 and "bleu_1" not in card["scores"]
    page.goto(f"{server}/")
    line = page.locator("#model-card")
    line.wait_for(state="visible")
    assert line.inner_text() == (
        f"Version {VERSION}: EfficientNet-Lite0 + attention LSTM, trained on synthetic coloured shapes, "
        "BLEU-4 0.906, CIDEr-D 3.500 (dev split)."
    )
    warning = page.locator("#model-warning")
    assert warning.is_visible() and "only knows coloured shapes" in warning.inner_text()
    note = page.locator("#attention-note")
    note.wait_for(state="visible")
    assert note.inner_text() == "This model has no attention decoder (merge model), so the page cannot show where it looked."


def test_caption_and_version_match_the_rest_api(server, page, tmp_path):
    from playwright.sync_api import expect

    expected = rest_predict(server, GOOD)["caption"]
    assert expected, "the test image must get a caption with words from the tiny model; pick another"
    served = rest_served_version(server)
    assert served == VERSION
    (tmp_path / "field.jpg").write_bytes(GOOD)

    page.goto(f"{server}/")
    expect(page.locator("#server-status")).to_have_text(f"Model captioner, version {VERSION}, is ready.")
    expect(page.locator("#api-url")).to_have_text(server)
    page.get_by_label("Choose one or more images").set_input_files(tmp_path / "field.jpg")
    wait_until_settled(page, 1)

    result = page.locator("#results .result")
    assert result.get_attribute("data-state") == "done"
    assert result.locator(".caption").inner_text() == expected
    assert result.locator("img").get_attribute("alt") == expected
    assert result.locator(".version").inner_text() == str(served)
    assert result.locator(".method").inner_text() == "greedy"
    assert result.locator(".file-name").inner_text() == "field.jpg"
    assert result.locator(".alternatives").is_hidden()
    assert result.locator("img").evaluate("(img) => img.complete && img.naturalWidth") == 96  # the thumbnail shows

    page.screenshot(path=str(tmp_path / "web_page.png"), full_page=True)

    page.get_by_role("button", name="Clear results").click()
    expect(page.locator("#results .result")).to_have_count(0)
    expect(page.locator("#no-results")).to_be_visible()


def test_a_bad_file_gets_an_error_and_the_good_one_its_caption(server, page, tmp_path):
    (tmp_path / "notes.jpg").write_bytes(NOT_AN_IMAGE)
    (tmp_path / "field.jpg").write_bytes(GOOD)
    page.goto(f"{server}/")
    sent = predict_requests(page)
    page.get_by_label("Choose one or more images").set_input_files([tmp_path / "notes.jpg", tmp_path / "field.jpg"])
    wait_until_settled(page, 2)

    bad, good = page.locator("#results .result").all()
    assert bad.get_attribute("data-state") == "error"
    assert bad.locator(".file-name").inner_text() == "notes.jpg"
    error = bad.locator(".error").inner_text()
    assert error.startswith("not an image: Unknown image file format"), error
    assert bad.locator(".caption").is_hidden()
    bad.locator(".no-preview").wait_for(state="visible", timeout=WAIT_MS)  # the browser cannot show it either
    assert "no caption" in bad.locator("img").get_attribute("alt")

    assert good.get_attribute("data-state") == "done"
    assert good.locator(".caption").inner_text() == rest_predict(server, GOOD)["caption"]
    assert good.locator(".version").inner_text() == str(VERSION)
    # One request for the upload, refused for the bad file, then one request per image.
    assert [len(body["instances"]) for body in sent] == [2, 1, 1]
    page.screenshot(path=str(tmp_path / "web_page_error.png"), full_page=True)


def test_beam_search_shows_the_other_candidates_with_their_shares(server, page, tmp_path):
    expected = rest_predict(server, GOOD, "beam_search")
    assert len(expected["alternatives"]) == len(expected["scores"]) == 2
    (tmp_path / "field.jpg").write_bytes(GOOD)
    page.goto(f"{server}/")
    sent = predict_requests(page)
    page.get_by_label("Choose one or more images").set_input_files(tmp_path / "field.jpg")
    wait_until_settled(page, 1)
    result = page.locator("#results .result")
    assert result.locator(".alternatives").is_hidden()

    # Ticking the box captions the images on the page again, with beam search.
    page.get_by_label("Beam search").check()
    page.wait_for_function("() => document.querySelector('#results .result .method')?.textContent === 'beam search'"
                           " && document.querySelector('#results .result').dataset.state === 'done'", timeout=WAIT_MS)
    assert sent[-1]["signature_name"] == "beam_search"
    assert result.locator(".caption").inner_text() == expected["caption"]
    # The chosen caption is not repeated below it; the others show their share of the K
    # candidates (a softmax over the beam's scores), as whole percents.
    rows = result.locator(".alternatives tbody tr")
    assert rows.count() == 1 and result.locator(".alternatives").is_visible()
    assert rows.nth(0).locator(".alt-caption").get_attribute("data-caption") == expected["alternatives"][1]
    weights = [math.exp(score) for score in expected["scores"]]
    shares = [w / sum(weights) for w in weights]
    assert rows.nth(0).locator(".alt-score").inner_text() == f"{round(shares[1] * 100)}%"
    assert result.locator(".confidence").inner_text() == f"Confidence: {round(shares[0] * 100)}% of the 2 candidates' weight."
    page.screenshot(path=str(tmp_path / "web_page_beam.png"), full_page=True)

    # And back: greedy again, no alternatives.
    page.get_by_label("Beam search").uncheck()
    page.wait_for_function("() => document.querySelector('#results .result .method')?.textContent === 'greedy'"
                           " && document.querySelector('#results .result').dataset.state === 'done'", timeout=WAIT_MS)
    assert sent[-1]["signature_name"] == "serving_default"
    assert result.locator(".alternatives").is_hidden()


def test_tf_serving_answers_bare_strings_without_a_version_header(server, page, tmp_path):
    """TF Serving gives a one-output signature's predictions as bare strings and sends no
    X-Model-Version header: the page then takes the version from the model status."""
    status_requests: list[str] = []

    def like_tf_serving(route):
        response = route.fetch(timeout=WAIT_MS)
        body = response.json()
        body["predictions"] = [p["caption"] if isinstance(p, dict) else p for p in body["predictions"]]
        headers = {key: value for key, value in response.headers.items()
                   if key.lower() not in ("x-model-version", "content-length")}
        route.fulfill(status=response.status, headers=headers, body=json.dumps(body))

    page.route(lambda url: url.endswith(":predict"), like_tf_serving)
    page.on("request", lambda request: status_requests.append(request.url)
            if request.url.endswith("/v1/models/captioner") else None)
    page.goto(f"{server}/")
    page.wait_for_function("() => document.querySelector('#server-status').textContent.includes('is ready')",
                           timeout=WAIT_MS)
    before = len(status_requests)
    (tmp_path / "field.jpg").write_bytes(GOOD)
    page.get_by_label("Choose one or more images").set_input_files(tmp_path / "field.jpg")
    wait_until_settled(page, 1)

    result = page.locator("#results .result")
    assert result.get_attribute("data-state") == "done"
    assert result.locator(".caption").inner_text() == rest_predict(server, GOOD)["caption"]
    assert result.locator(".version").inner_text() == str(VERSION)
    assert len(status_requests) > before  # asked the status, since no header named the version


def test_an_unreachable_server_is_named(server, page, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = f"http://127.0.0.1:{port}"
    page.goto(f"{server}/?api={api}")
    page.wait_for_function("() => document.querySelector('#server-status').classList.contains('is-error')",
                           timeout=WAIT_MS)
    assert f"server unreachable at {api}" in page.locator("#server-status").inner_text()
    assert page.locator("#api-url").inner_text() == api

    (tmp_path / "field.jpg").write_bytes(GOOD)
    page.get_by_label("Choose one or more images").set_input_files(tmp_path / "field.jpg")
    wait_until_settled(page, 1)
    error = page.locator("#results .result .error").inner_text()
    assert error.startswith(f"server unreachable at {api}"), error


def test_drop_two_images_on_a_narrow_window(server, page, tmp_path):
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"{server}/")
    sent = predict_requests(page)
    long_name = "a_photo_with_a_very_long_file_name_that_has_no_spaces_at_all_to_wrap_at_" + "x" * 40 + ".jpg"
    drop_files(page, [("field.jpg", GOOD), (long_name, OTHER)])
    wait_until_settled(page, 2)

    first, second = page.locator("#results .result").all()
    assert first.locator(".caption").inner_text() == rest_predict(server, GOOD)["caption"]
    assert second.locator(".file-name").inner_text() == long_name
    assert second.locator(".caption").get_attribute("data-caption") == rest_predict(server, OTHER)["caption"]
    assert [len(body["instances"]) for body in sent] == [2]  # one request for the upload

    page.get_by_label("Beam search").check()
    page.wait_for_function("() => [...document.querySelectorAll('#results .result')].every("
                           "(item) => item.dataset.state === 'done' && item.querySelector('.method').textContent === 'beam search')",
                           timeout=WAIT_MS)
    widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways at 360 px: {widths}"
    page.screenshot(path=str(tmp_path / "web_page_narrow.png"), full_page=True)


# ----------------------------------------------------------------------------------------------
# The attention model: the heat map of each word, and the other ways in (paste, examples, copy)


@pytest.fixture(scope="module")
def attention_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    base = tmp_path_factory.mktemp("web_attention_models") / "captioner"
    push_version(tiny_model(tmp_path_factory.getbasetemp(), decoder="attention"), base, VERSION)
    log = tmp_path_factory.getbasetemp() / "web_attention_server.log"
    with local_server_process(base, log, "--static-dir", str(REPO / "serving" / "web")) as url:
        yield url


def canvas_alpha(page, x: float, y: float) -> int:
    """The heat map's opacity (0-255) at a point given as fractions of the photo's width and height."""
    return page.evaluate(
        """([x, y]) => {
            const canvas = document.querySelector('#results .result .heat-map');
            const px = Math.min(canvas.width - 1, Math.floor(x * canvas.width));
            const py = Math.min(canvas.height - 1, Math.floor(y * canvas.height));
            return canvas.getContext('2d').getImageData(px, py, 1, 1).data[3];
        }""",
        [x, y],
    )


def test_pointing_at_a_word_shows_where_the_model_looked(attention_server, page, tmp_path):
    expected = rest_predict(attention_server, GOOD, "attention")
    rows, columns = expected["grid_size"]
    (tmp_path / "field.jpg").write_bytes(GOOD)
    page.goto(f"{attention_server}/")
    sent = predict_requests(page)
    note = page.locator("#attention-note")
    note.wait_for(state="visible")
    assert note.inner_text() == "Point at a word of a caption to see where in the photo the model looked for it."
    page.get_by_label("Choose one or more images").set_input_files(tmp_path / "field.jpg")
    wait_until_settled(page, 1)
    assert sent[-1]["signature_name"] == "attention"

    result = page.locator("#results .result")
    words = result.locator(".caption .word")
    shown = [words.nth(i).inner_text() for i in range(words.count())]
    assert " ".join(shown) == expected["caption"] and shown == [w for w in expected["words"] if w]
    assert result.locator(".heat-map").is_hidden()

    # Each word: its probability on the word, and the photo dark where it did not look.
    for position, word in enumerate(expected["words"][:2]):
        span = result.locator(f".caption .word[data-index='{position}']")
        span.hover()
        assert result.get_attribute("data-word") == str(position)
        assert result.locator(".heat-map").is_visible()
        probability = expected["word_probabilities"][position]
        assert span.get_attribute("title") == f"{word}: probability {round(probability * 100)}%"
        weights = expected["attention"][position]
        most, least = weights.index(max(weights)), weights.index(min(weights))
        centre = lambda cell: ((cell % columns + 0.5) / columns, (cell // columns + 0.5) / rows)  # noqa: E731
        looked, ignored = canvas_alpha(page, *centre(most)), canvas_alpha(page, *centre(least))
        assert looked < 60 < 140 < ignored, (looked, ignored)
    page.screenshot(path=str(tmp_path / "web_page_heat_map.png"), full_page=True)

    page.mouse.move(1, 1)  # away from the words: the photo clears
    assert result.locator(".heat-map").is_hidden()
    geometric = math.exp(sum(math.log(p) for p, w in zip(expected["word_probabilities"], expected["words"]) if w)
                         / len(shown))
    assert result.locator(".confidence").inner_text() == (
        f"Confidence: {round(geometric * 100)}% per word on average; point at a word for its own."
    )


def test_a_pasted_image_is_captioned(attention_server, page):
    page.goto(f"{attention_server}/")
    page.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], 'image.jpg', { type: 'image/jpeg' }));
            document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true }));
        }""",
        base64.b64encode(OTHER).decode(),
    )
    wait_until_settled(page, 1)
    result = page.locator("#results .result")
    assert result.get_attribute("data-state") == "done"
    assert result.locator(".caption").get_attribute("data-caption") == rest_predict(attention_server, OTHER)["caption"]


def test_an_example_photo_is_one_click_and_its_caption_can_be_copied(attention_server, page):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=attention_server)
    page.goto(f"{attention_server}/")
    page.get_by_role("button", name="Example: cat").click()
    wait_until_settled(page, 1)
    result = page.locator("#results .result")
    assert result.locator(".file-name").inner_text() == "cat.jpg"
    example = (REPO / "serving" / "web" / "examples" / "cat.jpg").read_bytes()
    caption = rest_predict(attention_server, example)["caption"]
    assert caption and result.locator(".caption").get_attribute("data-caption") == caption

    result.get_by_role("button", name="Copy").click()
    page.wait_for_function("() => document.querySelector('#results .result .copy').textContent === 'Copied'",
                           timeout=WAIT_MS)
    assert page.evaluate("() => navigator.clipboard.readText()") == caption
