"""The Space's Live tab (issue 18 §3): chunks as Gradio streams them, the session limit, stop with curve and CSV."""

import csv
import glob
import re
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile

from conftest import ROOT
from test_space_app import load_space_app

load_space_app()  # puts space/ on sys.path: the Space's modules below
import live  # noqa: E402
import page  # noqa: E402
import settings  # noqa: E402

CLIP = sorted(glob.glob(str(ROOT / "tests" / "data" / "tcdvoip" / "audio" / "**" / "*.wav"), recursive=True))[0]


def request(name):
    return SimpleNamespace(session_hash=name)


def stream_clip(handlers, name, samples, rate, every=0.5):
    step = int(rate * every)
    outputs = [handlers.chunk((rate, samples[i : i + step]), request(name)) for i in range(0, len(samples), step)]
    return outputs


def test_live_session_scores_each_hop_like_the_library_and_stop_leaves_curve_and_csv(scorer):
    x, rate = soundfile.read(CLIP, dtype="int16", always_2d=True)  # int16, as the browser's chunks arrive
    x = x[:, 0]
    handlers = live.LiveHandlers(live.LiveSessions(scorer, settings.Limits(live_hop=2.0)))
    handlers.start(request("a"))
    outputs = stream_clip(handlers, "a", x, rate)
    markdown, plot = outputs[-1]
    assert markdown.startswith("### Running MOS") and plot.visible is True
    points = re.findall(r"<title>live: ([\d.]+) s, MOS ([\d.]+)</title>", plot.value)
    assert [float(t) for t, _ in points] == [2.0, 4.0, 6.0, 7.68]  # the curve grew by one point per hop
    whole = scorer.prepare(x, rate)
    (window,) = scorer.score_prepared([whole[:122880]])
    assert float(points[-1][1]) == pytest.approx(window.mos, abs=0.0051)  # two decimals in the tooltip
    status, plot, csv_file = handlers.stop(request("a"))
    assert "Stopped" in status and plot.visible is True and csv_file.visible is True
    path = csv_file.value["path"] if isinstance(csv_file.value, dict) else csv_file.value  # gradio's FileData
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["end"]) for r in rows] == [2.0, 4.0, 6.0, 7.68]
    assert float(rows[-1]["score"]) == pytest.approx(window.mos, abs=1e-5)
    assert handlers.sessions.active == 0


def test_sessions_over_the_limit_get_a_message_and_nothing_leaks(scorer):
    sessions = live.LiveSessions(scorer, settings.Limits(live_sessions=1))
    handlers = live.LiveHandlers(sessions)
    one_second = (16000, (3000 * np.sin(np.arange(16000) / 4)).astype(np.int16))
    first, _ = handlers.chunk(one_second, request("a"))
    assert first.startswith("### Running MOS")
    refused, plot = handlers.chunk(one_second, request("b"))
    assert "live session(s) are all in use" in refused
    handlers.stop(request("a"))  # a's slot is given back: b now gets a fresh stream of its own
    fresh, _ = handlers.chunk(one_second, request("b"))
    assert fresh.startswith("### Running MOS") and "1 s scored" in fresh
    assert sessions.get("b").stream.seconds == pytest.approx(1.0)


def test_session_length_limit_and_a_format_change_stop_scoring_with_a_message(scorer):
    handlers = live.LiveHandlers(live.LiveSessions(scorer, settings.Limits(live_seconds=2)))
    chunk = (16000, (3000 * np.sin(np.arange(16000) / 4)).astype(np.int16))
    for _ in range(2):
        markdown, _ = handlers.chunk(chunk, request("a"))
    assert "Session limit reached (2 s)" in markdown
    markdown, _ = handlers.chunk(chunk, request("a"))
    assert "2 s scored" in markdown  # nothing more is scored
    handlers.start(request("c"))
    handlers.chunk(chunk, request("c"))
    markdown, _ = handlers.chunk((44100, chunk[1]), request("c"))
    assert "Scoring stopped: the stream's sampling rate changed from 16000 Hz to 44100 Hz" in markdown


def test_live_tab_is_wired_with_the_limits(scorer):
    limits = settings.Limits(live_sessions=3, live_seconds=60)
    demo = page.build_demo(scorer, limits, examples=[])
    streams = [fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "chunk"]
    assert len(streams) == 1 and streams[0].concurrency_limit == 3 and streams[0].time_limit == 65
    assert "3 live session(s)" in str(demo.config) and "echo cancellation" in str(demo.config)
    assert "echoCancellation: false" in page.launch_kwargs(limits)["head"]
