"""
The Space in a real browser: starts the app on 127.0.0.1 and drives it with Playwright in headless Debian Chromium
(upload a GenSpeech clip, upload a corrupt file, record from the fake microphone), then saves a screenshot.

Needs the `playwright` Python package and a `chromium` binary on PATH (Debian's; never `playwright install`).
Without them the test is skipped, unless DISTILL_MOS_REQUIRE_BROWSER=1 (CI), where it fails instead.
The screenshot goes to $DISTILL_MOS_SCREENSHOT_DIR if set, else the test's temporary folder.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import GENSPEECH
from test_space_api import served  # noqa: F401 - the app on 127.0.0.1, shared fixture

CLIP = GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall" / "dir3" / "opus.wav"  # 7.8 s: two windows
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]
SCORE_TIMEOUT_MS = 90_000
MOS = re.compile(r"Predicted MOS (\d\.\d\d) / 5")


def _browser_or_skip():
    required = os.environ.get("DISTILL_MOS_REQUIRE_BROWSER") == "1"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if chromium and sync_playwright:
        return chromium, sync_playwright
    reason = "needs the playwright package and a chromium binary (apt install chromium)"
    if required:
        pytest.fail(reason)
    pytest.skip(reason)


def _wait_for_result(page, text: str) -> str:
    page.wait_for_function(
        "t => document.querySelector('#result').innerText.includes(t)", arg=text, timeout=SCORE_TIMEOUT_MS
    )
    return page.locator("#result").inner_text()


def _upload(page, path: Path) -> None:
    page.locator("#audio-input input[type=file]").set_input_files(str(path))
    # the upload is done when the player shows the file's download link
    page.locator("#audio-input a[download]").wait_for(timeout=30_000)


def _clear_audio(page) -> None:
    page.locator("#audio-input button[aria-label=Clear]").click()
    page.locator("#audio-input a[download]").wait_for(state="detached", timeout=10_000)
    page.locator("#audio-input button[aria-label='Upload file']").click()  # back to the upload source


def test_space_in_chromium(scorer, served, tmp_path):  # noqa: F811
    chromium, sync_playwright = _browser_or_skip()
    (expected,) = scorer.score_files([CLIP])
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00garbage" * 200)
    shots = Path(os.environ.get("DISTILL_MOS_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(permissions=["microphone"], viewport={"width": 1280, "height": 1000})
            page = context.new_page()
            page.goto(served)
            page.locator("#score-button").wait_for(timeout=60_000)

            # 1. a GenSpeech clip: the page shows the library's MOS to 0.01, the window plot and what was read
            _upload(page, CLIP)
            page.locator("#score-button").click()
            text = _wait_for_result(page, "Predicted MOS")
            assert float(MOS.search(text).group(1)) == pytest.approx(expected.mos, abs=0.006)
            assert "7.80 s · 16000 Hz · 1 channel (mono)" in text
            assert "Human listening-test MOS" in text
            page.locator("#window-plot svg").first.wait_for(timeout=30_000)
            page.screenshot(path=str(shots / "space_scored.png"), full_page=True)

            # 2. a corrupt file: a readable message in the page, no traceback
            _clear_audio(page)
            _upload(page, corrupt)
            page.locator("#score-button").click()
            text = _wait_for_result(page, "Could not score this file")
            assert "Not a readable audio file" in text and "corrupt.wav" in text
            assert "Traceback" not in page.content()

            # 3. the fake microphone (a beep): record about 2 s, stop, score
            _clear_audio(page)
            page.locator("#audio-input button[aria-label='Record audio']").click()
            page.locator("#audio-input button:visible", has_text=re.compile(r"^\s*Record\s*$")).click()
            page.wait_for_timeout(2_500)
            page.locator("#audio-input button:visible", has_text=re.compile(r"^\s*Stop\s*$")).first.click()
            link = page.locator("#audio-input a[download]")
            link.wait_for(timeout=30_000)
            page.locator("#score-button").click()
            text = _wait_for_result(page, "Predicted MOS")
            duration = float(re.search(r"Read: (\d+\.\d\d) s", text).group(1))
            assert 1.0 < duration < 10.0
            assert "Human listening-test" not in text
            # the page's score is the library's score of the recording the browser uploaded
            recording = tmp_path / ("recording" + Path(link.get_attribute("href")).suffix)
            recording.write_bytes(page.request.get(link.get_attribute("href")).body())
            (recorded,) = scorer.score_files([recording])
            assert recorded.error is None and recorded.duration == pytest.approx(duration, abs=0.006)
            assert float(MOS.search(text).group(1)) == pytest.approx(recorded.mos, abs=0.006)
            page.screenshot(path=str(shots / "space_microphone.png"), full_page=True)

            # 4. after the error the app still serves: the same clip gives the same score again
            _clear_audio(page)
            _upload(page, CLIP)
            page.locator("#score-button").click()
            page.wait_for_function(
                "t => document.querySelector('#result').innerText.includes(t)",
                arg="GenSpeech clip", timeout=SCORE_TIMEOUT_MS,
            )
            text = page.locator("#result").inner_text()
            assert float(MOS.search(text).group(1)) == pytest.approx(expected.mos, abs=0.006)

            screenshot = shots / "space.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 10_000
        finally:
            browser.close()
