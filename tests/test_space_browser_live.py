"""
The Live tab in a real browser (issue 18 §3): Debian Chromium's fake microphone plays a bundled speech recording
(`--use-file-for-fake-audio-capture`); the live curve appears, grows every hop, and its scores agree with the offline
scores of the same samples of the file within LIVE_TOLERANCE; Stop leaves the curve and the CSV.

Chromium captures the fake microphone at 44.1 kHz and passes a 44.1 kHz 16-bit file through sample for sample
(both channels the file's one), so the file is written at that rate: each live window can then be found in the file
bit for bit, and its offline score computed from the file itself. Two things stand between the file and the page,
and the test tells them apart: the Space's transport (Gradio overwrites chunks it has not handed over yet; the page
numbers them and `stream_chunks` puts every one back in order: the test asserts that every numbered chunk arrived),
and Chromium's fake device, which starts with silence and, on a loaded machine, skips stretches of the file. Windows
that hold such a skip are not the file's samples: they are counted and left out, and the test needs enough whole ones.
"""

import glob
import re

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from conftest import ROOT
from test_space_api import served  # noqa: F401 - the app on 127.0.0.1, shared fixture
from test_space_browser import CHROMIUM_ARGS, _browser_or_skip

FILES = sorted(glob.glob(str(ROOT / "tests" / "data" / "tcdvoip" / "audio" / "**" / "*.wav"), recursive=True))
CAPTURE_RATE = 44100  # Chromium's fake microphone
LIVE_TOLERANCE = 1e-4  # MOS, against the file's samples as the browser records them: the library's parity bound
FILE_TOLERANCE = 0.05  # MOS, against the file's own samples: the recorder's 1-LSB rounding (measured: up to 0.018)
MIN_WHOLE_UPDATES = 3  # updates whose samples are all the file's (of about 20)
POINT = re.compile(r"<title>live: ([\d.]+) s, MOS ([\d.]+)</title>")
GRID = 441  # 44.1 kHz samples per 160 samples at 16 kHz: an offline slice starting on this grid resamples alike
MARGIN = 2 * GRID  # input on either side of a window that its resampled samples depend on (the sinc kernel's span)


@pytest.fixture(scope="module")
def fake_microphone(tmp_path_factory):
    """16 s of speech (TCD-VoIP clips end to end) at the capture rate, 16-bit mono, as the fake device reads it."""
    speech = np.concatenate([soundfile.read(f, dtype="float32", always_2d=True)[0][:, 0] for f in FILES[:2]])
    speech = torchaudio.functional.resample(torch.from_numpy(speech[: 16 * 48000]), 48000, CAPTURE_RATE).numpy()
    path = tmp_path_factory.mktemp("mic") / "speech.wav"
    soundfile.write(path, speech, CAPTURE_RATE, subtype="PCM_16")
    return path


def _points(page):
    html = page.locator("#live-plot").inner_html() if page.locator("#live-plot svg").count() else ""
    return [(float(t), float(m)) for t, m in POINT.findall(html)]


def as_the_browser_records(samples: np.ndarray) -> np.ndarray:
    """
    The file's 16-bit samples as the page receives them: Chromium's fake device reads them as float32 `v * (1/32767)`
    and Gradio's recorder writes 16-bit PCM back (x 32768 below zero, x 32767 above, truncated), so about a third
    of the samples come back 1 LSB off. Reproduces every sample of what was received here.
    """
    level = samples.astype(np.float32) * np.float32(1 / 32767)
    level = level.astype(np.float64)
    return np.trunc(np.where(level < 0, level * 32768, level * 32767)).astype(np.int64)


def _file_offset(received: np.ndarray, stop: int, recorded: np.ndarray, period: int) -> int | None:
    """Where received[stop - 1 s : stop] lies in the looped file as recorded (bit for bit), or None (it does not)."""
    piece = received[max(0, stop - CAPTURE_RATE) : stop].astype(np.float64)
    if np.abs(piece).max() < 100:
        return None  # silence matches anywhere
    size = 1 << int(np.ceil(np.log2(period + 2 * len(piece))))
    correlation = np.fft.irfft(
        np.fft.rfft(recorded[: period + len(piece)].astype(np.float64), size) * np.conj(np.fft.rfft(piece, size)), size
    )
    start = int(np.argmax(correlation[:period]))  # file index of piece[0]
    found = np.array_equal(recorded[start : start + len(piece)], piece)
    return (start - (stop - len(piece))) % period if found else None


def _offline_scores(scorer, received, looped, recorded, period, update) -> tuple[float, float] | None:
    """
    The offline scores of the file's samples under `update`'s window (as the browser records them, and as they are
    in the file), if the browser delivered them unbroken; None otherwise.
    """
    a16, b16 = round(update.start * 16000), round(update.end * 16000)
    a_in, b_in = a16 * GRID // 160, b16 * GRID // 160
    start = max(0, (a_in - MARGIN) // GRID * GRID)  # on the stream's resampling grid
    stop = b_in + MARGIN
    if stop > len(received) or (start == 0 and a16 != 0):
        return None  # the stream ended inside the window's margin (the last, flushed update), or began in it
    offset = _file_offset(received, b_in, recorded, period)
    if offset is None or not np.array_equal(recorded[offset + start : offset + stop], received[start:stop]):
        return None  # the browser skipped audio inside the window or its margin
    first = a16 - start * 160 // GRID
    pieces = [scorer.prepare(samples[offset + start : offset + stop].astype(np.int16), CAPTURE_RATE)
              [first : first + (b16 - a16)] for samples in (recorded, looped)]
    as_recorded, as_in_file = (score.mos for score in scorer.score_prepared(pieces))
    return as_recorded, as_in_file


def test_live_curve_appears_grows_and_agrees_with_the_files_own_samples(scorer, served, fake_microphone, tmp_path, monkeypatch):  # noqa: F811
    chromium, sync_playwright = _browser_or_skip()
    import stream_chunks
    from distill_mos.stream import StreamScorer

    received, updates, push, flush = [], [], StreamScorer.push, StreamScorer.flush  # the app runs in this process

    def recording_push(self, chunk, sampling_rate):
        received.append((np.array(chunk), sampling_rate))
        done = push(self, chunk, sampling_rate)
        updates.extend(done)
        return done

    def recording_flush(self):
        summary = flush(self)
        updates.extend(summary.updates)
        return summary

    numbers, record = [], stream_chunks.ChunkInbox.record

    def numbered_record(self, session, path):
        numbers.append(int(stream_chunks.CHUNK_NAME.search(path)["number"]))
        record(self, session, path)

    monkeypatch.setattr(StreamScorer, "push", recording_push)
    monkeypatch.setattr(StreamScorer, "flush", recording_flush)
    monkeypatch.setattr(stream_chunks.ChunkInbox, "record", numbered_record)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={fake_microphone}"]
        )
        try:
            context = browser.new_context(permissions=["microphone"], viewport={"width": 1280, "height": 1100})
            page = context.new_page()
            logs = []
            page.on("console", lambda message: logs.append(message.text))
            page.goto(served)
            page.get_by_role("tab", name="Live").click()
            assert "echo cancellation" in page.content()
            page.locator("#live-input button:visible", has_text=re.compile(r"^\s*Record\s*$")).first.click()
            try:
                page.wait_for_function("() => document.querySelectorAll('#live-plot circle.mos-point').length >= 2",
                                       timeout=90_000)
            except Exception as error:  # say where it stopped: the page, the chunks recorded, those scored
                raise AssertionError(f"no live curve: page says {page.locator('#live-result').inner_text()!r}; "
                                     f"{len(numbers)} chunks recorded ({numbers[:8]}...), {len(received)} scored; "
                                     f"page log {logs[-5:]}") from error
            first = len(_points(page))
            page.wait_for_function(
                "n => document.querySelectorAll('#live-plot circle.mos-point').length >= n", arg=first + 18,
                timeout=120_000,
            )
            grown = _points(page)
            assert len(grown) > first and [t for t, _ in grown] == sorted(t for t, _ in grown)
            page.locator("#live-input button:visible", has_text=re.compile(r"^\s*Stop\s*$")).first.click()
            page.locator("#live-csv a[download]").wait_for(timeout=60_000)
            text = page.locator("#live-result").inner_text()
            assert "Stopped" in text and "Running MOS" in text and "never reached the Space" not in text
            final = _points(page)
            assert len(final) >= len(grown)  # the curve stays after Stop
            page.screenshot(path=str(tmp_path / "space_live.png"), full_page=True)
        finally:
            browser.close()

    # the transport: every chunk the page numbered reached the Space, and was scored once (but for one or two whose
    # upload was still under way at Stop)
    assert sorted(numbers) == list(range(min(numbers), max(numbers) + 1))
    assert len(numbers) - 2 <= len(received) <= len(numbers)
    assert [m for _, m in final] == pytest.approx([u.score for u in updates], abs=0.0051)  # the page shows them
    assert {rate for _, rate in received} == {CAPTURE_RATE}, "Chromium's fake microphone rate changed"
    audio = np.concatenate([c if c.ndim == 1 else c[:, 0] for c, _ in received]).astype(np.int64)

    # the scores: each window the browser delivered unbroken against the offline score of the file's samples
    file_samples = soundfile.read(fake_microphone, dtype="int16")[0].astype(np.int64)
    looped = np.tile(file_samples, 2 + len(audio) // len(file_samples))
    recorded = as_the_browser_records(looped)
    offline = [_offline_scores(scorer, audio, looped, recorded, len(file_samples), u) for u in updates]
    whole = [(u.score, *o) for u, o in zip(updates, offline) if o is not None]
    live, as_recorded, as_in_file = np.array(whole).T if whole else (np.zeros(0),) * 3
    print(f"live updates vs the file: {len(whole)} of {len(updates)} updates whole "
          f"({sum(not u.partial for u, o in zip(updates, offline) if o)} full windows); max |live - offline| "
          f"{np.abs(live - as_recorded).max(initial=0):.1e} MOS on the file's samples as the browser records them, "
          f"{np.abs(live - as_in_file).max(initial=0):.3f} on the file's own; {len(numbers)} chunks, none lost")
    assert len(whole) >= MIN_WHOLE_UPDATES, "the browser skipped audio in nearly every window (a loaded machine?)"
    assert np.abs(live - as_recorded).max() <= LIVE_TOLERANCE
    assert np.abs(live - as_in_file).max() <= FILE_TOLERANCE
