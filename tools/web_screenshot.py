"""The README's screenshot of the web page: a served model, a photo, its caption and the heat
map of one word, taken in headless Chromium.

    .venv/bin/python tools/web_screenshot.py --model-base serving/models/captioner \
        --image ../shared/flickr8k-fullsize-dev/<id>.jpg --word dog --out docs/web_page.png

Starts `python -m serving.local_server` on a free loopback port with this checkout's page,
uploads the photo, points at the first occurrence of `--word` in its caption (the first word
when absent) and saves the page. Debian's /usr/bin/chromium (tools/ensure-chromium.sh).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.serving_models import local_server_process  # noqa: E402
from tests.test_web_e2e import CHROMIUM, CHROMIUM_ARGS, WAIT_MS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base", type=Path, required=True, help="TF Serving's model base directory")
    parser.add_argument("--image", type=Path, required=True, help="the photo to caption")
    parser.add_argument("--word", default="", help="the word whose heat map to show")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "web_page.png")
    parser.add_argument("--width", type=int, default=1000)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    log = args.out.with_suffix(".server.log")
    with local_server_process(args.model_base.resolve(), log, "--static-dir", str(REPO / "serving" / "web")) as url:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=WAIT_MS)
            try:
                page = browser.new_page(viewport={"width": args.width, "height": 900}, device_scale_factor=1)
                page.set_default_timeout(WAIT_MS)
                page.goto(f"{url}/")
                page.locator("#attention-note").wait_for(state="visible")
                page.get_by_label("Choose one or more images").set_input_files(args.image)
                page.wait_for_function("() => document.querySelector('#results .result')?.dataset.state === 'done'")
                words = page.locator("#results .result .caption .word")
                texts = [words.nth(i).inner_text() for i in range(words.count())]
                index = texts.index(args.word) if args.word in texts else 0
                if texts:
                    words.nth(index).hover()
                caption = page.locator("#results .result .caption").get_attribute("data-caption")
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=True)
            finally:
                browser.close()
    log.unlink(missing_ok=True)
    print(f"{args.out}: {args.image.name}: {caption!r}, heat map of {texts[index] if texts else None!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
