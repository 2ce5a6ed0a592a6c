"""
The Space in a real browser: starts the app on 127.0.0.1 and drives it with Playwright in headless Debian Chromium
(upload a GenSpeech clip, upload a corrupt file, record from the fake microphone), then saves a screenshot; reads the
per-window plot back from the page after successive uploads of different lengths and compares its points with the
`/predict` API's window scores; compares two clips on the Compare tab against `/compare`; scores a .webm, a .wav and
a text file on the "Several files" tab (one row each) and sees the CSV box appear only then.

Needs the `playwright` Python package and a `chromium` binary on PATH (Debian's; never `playwright install`).
Without them the test is skipped, unless DISTILL_MOS_REQUIRE_BROWSER=1 (CI), where it fails instead.
The screenshot goes to $DISTILL_MOS_SCREENSHOT_DIR if set, else the test's temporary folder.
"""

import contextlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

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


def _upload(page, path: Path, target: str = "#audio-input") -> None:
    page.locator(f"{target} input[type=file]").set_input_files(str(path))
    # the upload is done when the player shows the file's download link
    page.locator(f"{target} a[download]").wait_for(timeout=30_000)


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
            # two windows 0.12 s apart: no plot (issue 17 §4); test_plot_follows_each_upload reads plots back
            assert not page.locator("#window-plot svg.mos-plot").is_visible()
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


# --- the per-window plot, read back from the page --------------------------------------------------------------------

READ_PLOT_JS = """
root => {
  const svg = root.querySelector('svg.mos-plot');
  if (!svg) return null;
  const ticks = selector => [...svg.querySelectorAll(selector + ' text')].map(
    t => [parseFloat(t.textContent), parseFloat(t.getAttribute('x')), parseFloat(t.getAttribute('y'))]);
  return {
    x_ticks: ticks('g.x-tick'),
    y_ticks: ticks('g.y-tick'),
    points: [...svg.querySelectorAll('circle.mos-point')].map(
      c => [c.dataset.series, parseFloat(c.getAttribute('cx')), parseFloat(c.getAttribute('cy'))]),
  };
}
"""


def read_plot(page, selector: str) -> dict[str, list[tuple[float, float]]]:
    """The plotted points per series, converted from drawing coordinates to (seconds, MOS) with the drawn axes."""
    drawn = page.locator(selector).evaluate(READ_PLOT_JS)
    assert drawn is not None, f"no plot in {selector}"
    (t0, x0, _), (t1, x1, _) = drawn["x_ticks"][0], drawn["x_ticks"][-1]
    (m0, _, y0), (m1, _, y1) = drawn["y_ticks"][0], drawn["y_ticks"][-1]
    series: dict[str, list[tuple[float, float]]] = {}
    for name, cx, cy in drawn["points"]:
        series.setdefault(name, []).append((t0 + (cx - x0) * (t1 - t0) / (x1 - x0), m0 + (cy - y0) * (m1 - m0) / (y1 - y0)))
    return series


def _expected_points(result: dict) -> list[tuple[float, float]]:
    """(window centre s, MOS) of an API answer (`/predict`, or one clip of `/compare`)."""
    half = min(7.68, result["duration_s"]) / 2
    return [(start + half, score) for start, score in zip(result["window_start_times"], result["window_scores"])]


def _assert_plot_shows(page, selector: str, expected: dict, timeout_ms: int = 10_000) -> None:
    """The plot in `selector` draws exactly `expected` ({series: API answer or FileScore}), read back from the page."""
    wanted = {
        name: _expected_points(r if isinstance(r, dict) else {
            "duration_s": r.duration, "window_start_times": r.window_start_times, "window_scores": r.window_scores})
        for name, r in expected.items()
    }
    total = sum(len(points) for points in wanted.values())
    # the answer and the plot arrive together; allow the page a moment to draw, but a stale plot fails here
    page.wait_for_function(
        "([s, n]) => document.querySelectorAll(s + ' svg.mos-plot circle.mos-point').length === n",
        arg=[selector, total], timeout=timeout_ms,
    )
    drawn = read_plot(page, selector)
    assert sorted(drawn) == sorted(wanted)
    for name, points in wanted.items():
        assert len(drawn[name]) == len(points), name
        for (t, mos), (t_expected, mos_expected) in zip(drawn[name], points):
            assert t == pytest.approx(t_expected, abs=0.02), name  # seconds; drawn to 0.01 px
            assert mos == pytest.approx(mos_expected, abs=0.002), name  # MOS


@pytest.fixture(scope="module")
def clips_of_two_lengths(tmp_path_factory):
    """A 25 s and a 14 s clip cut from the bundled GenSpeech speech (19 and 8 windows; both get a plot)."""
    folder = tmp_path_factory.mktemp("lengths")
    parts = [soundfile.read(GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall" / "dir3" / f"{name}.wav",
                            dtype="float32")[0] for name in ("opus", "melp", "speex", "lpcnq")]
    speech = np.concatenate(parts)
    long, short = folder / "long_25s.wav", folder / "short_14s.wav"
    soundfile.write(long, speech[: 25 * 16000], 16000)
    soundfile.write(short, speech[-14 * 16000:], 16000)
    return long, short


@contextlib.contextmanager
def _page(served_url: str):
    chromium, sync_playwright = _browser_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(served_url)
            page.locator("#score-button").wait_for(timeout=60_000)
            yield page
        finally:
            browser.close()


def test_plot_follows_each_upload(served, clips_of_two_lengths, tmp_path):  # noqa: F811
    """Issue 11.1: the plot drew the previous upload's points. Two uploads of different lengths, each read back."""
    from gradio_client import Client, handle_file

    client = Client(served, verbose=False, download_files=False)
    long, short = clips_of_two_lengths
    with _page(served) as page:
        for clip, shown_duration in ((long, "25.00 s"), (short, "14.00 s"), (long, "25.00 s")):
            expected = client.predict(handle_file(str(clip)), api_name="/predict")
            if page.locator("#audio-input a[download]").count():
                _clear_audio(page)
            _upload(page, clip)
            page.locator("#score-button").click()
            text = _wait_for_result(page, f"Read: {shown_duration}")
            assert float(MOS.search(text).group(1)) == pytest.approx(expected["mos"], abs=0.006)
            assert len(expected["window_scores"]) == {"25.00 s": 19, "14.00 s": 8}[shown_duration]
            _assert_plot_shows(page, "#window-plot", {clip.name: expected})
            x_ticks = page.locator("#window-plot g.x-tick").count()
            assert 2 <= x_ticks <= 9
        page.screenshot(path=str(tmp_path / "space_plot.png"), full_page=True)


def test_compare_tab(served, clips_of_two_lengths, tmp_path):  # noqa: F811
    """Issue 11.4: two clips, both scores, B - A, both curves on one time axis: as `/compare` answers."""
    from gradio_client import Client, handle_file

    client = Client(served, verbose=False, download_files=False)
    long, short = clips_of_two_lengths
    expected = client.predict(handle_file(str(short)), handle_file(str(long)), api_name="/compare")
    with _page(served) as page:
        page.get_by_role("tab", name="Compare").click()
        _upload(page, short, "#compare-a")
        _upload(page, long, "#compare-b")
        page.locator("#compare-button").click()
        page.wait_for_function(
            "() => document.querySelector('#compare-result').innerText.includes('B − A')", timeout=SCORE_TIMEOUT_MS
        )
        text = page.locator("#compare-result").inner_text()
        assert f"B − A: {expected['difference']:+.2f} MOS".replace("-", "−") in text  # U+2212, as the header's
        assert f"{expected['a']['mos']:.2f}" in text and f"{expected['b']['mos']:.2f}" in text
        assert "short_14s.wav" in text and "long_25s.wav" in text
        _assert_plot_shows(
            page, "#compare-plot", {f"A: {short.name}": expected["a"], f"B: {long.name}": expected["b"]}
        )
        # one time axis for both: it spans the longer clip
        drawn = read_plot(page, "#compare-plot")
        assert max(t for t, _ in drawn[f"B: {long.name}"]) > 20 > max(t for t, _ in drawn[f"A: {short.name}"])
        page.screenshot(path=str(tmp_path / "space_compare.png"), full_page=True)


def test_several_files_tab(served, scorer, tmp_path):  # noqa: F811
    """Issue 11.2 and 11.3 in the page: a .webm and a text file among the uploads each get their own row; the
    "Download CSV" box is absent until there is a CSV."""
    import torch
    from torchcodec.encoders import AudioEncoder

    speech, rate = soundfile.read(CLIP, dtype="float32")
    webm = tmp_path / "speech.webm"
    AudioEncoder(torch.from_numpy(speech)[None], sample_rate=rate).to_file(str(webm))
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio\n")
    expected = list(scorer.score_files([webm, CLIP, notes]))
    with _page(served) as page:
        page.get_by_role("tab", name="Several files").click()
        page.locator("#files-input").wait_for(timeout=10_000)
        assert not page.locator("#batch-csv").is_visible()
        page.locator("#files-input input[type=file]").set_input_files([str(webm), str(CLIP), str(notes)])
        page.wait_for_function(  # uploaded: the list shows each name (as stem and extension)
            "() => ['speech', 'opus', 'notes', '.txt'].every(t => document.querySelector('#files-input').textContent"
            ".includes(t))", timeout=30_000,
        )
        page.locator("#score-all-button").click()
        page.wait_for_function(
            "() => document.querySelector('#batch-status').innerText.includes('Scored')", timeout=SCORE_TIMEOUT_MS
        )
        assert "Scored 2 of 3 file(s)." in page.locator("#batch-status").inner_text()
        table = page.locator("#batch-table").inner_text()
        for result in expected[:2]:
            assert f"{result.mos:.2f}" in table
        assert "speech.webm" in table and "notes.txt" in table and "Not a readable audio file" in table
        page.locator("#batch-csv").wait_for(state="visible", timeout=10_000)
        assert re.search(r"distill-mos-scores\s*\.csv", page.locator("#batch-csv").text_content())
        page.screenshot(path=str(tmp_path / "space_several.png"), full_page=True)
