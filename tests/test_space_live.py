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
import stream_chunks  # noqa: E402
from distill_mos.stream import StreamScorer  # noqa: E402

CLIP = sorted(glob.glob(str(ROOT / "tests" / "data" / "tcdvoip" / "audio" / "**" / "*.wav"), recursive=True))[0]


def request(name):
    return SimpleNamespace(session_hash=name)


def stream_clip(handlers, name, samples, rate, every=0.5):
    """The outputs of the calls that redrew the page (the others, without a new hop, return gr.skip())."""
    step = int(rate * every)
    outputs = [handlers.chunk((rate, samples[i : i + step]), request(name)) for i in range(0, len(samples), step)]
    return [o for o in outputs if not is_skip(o[0])]


def is_skip(update):
    return isinstance(update, dict) and update.get("__type__") == "update" and len(update) == 1


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


def write_chunks(folder, samples, rate, every=0.1):
    """The clip as the page streams it: one 16-bit WAV upload per 0.1 s chunk, named with its number."""
    step, paths = int(rate * every), []
    for n, i in enumerate(range(0, len(samples), step), 1):
        path = folder / f"upload{n}" / f"audio-{n:09d}.wav"
        path.parent.mkdir(parents=True)
        soundfile.write(path, samples[i : i + step], rate, subtype="PCM_16")
        paths.append(str(path))
    return paths


def test_every_chunk_is_scored_once_in_recording_order_whatever_gradio_hands_over(scorer, tmp_path):
    """
    Gradio calls the handler with the newest chunk only, now and then; the chunks recorded by the middleware in
    between (out of order, two of them identical silence, one never arriving) are scored in order, the lost one
    counted and said.
    """
    x, rate = soundfile.read(CLIP, dtype="int16", always_2d=True)
    x = x[:, 0].copy()
    step = rate // 10
    x[10 * step : 12 * step] = 0  # chunks 11 and 12: the same bytes
    sessions = live.LiveSessions(scorer, settings.Limits(live_hop=1.0))
    handlers = live.LiveHandlers(sessions)
    paths = write_chunks(tmp_path, x, rate)
    arrivals = [p for i, p in enumerate(paths) if i != 39]  # chunk 40 never arrives
    for i in range(1, len(arrivals) - 1, 3):  # uploads finishing out of order
        arrivals[i], arrivals[i + 1] = arrivals[i + 1], arrivals[i]
    handlers.start(request("a"))
    for n, path in enumerate(arrivals):
        sessions.inbox.record("a", path)  # as the middleware records each chunk's request
        if n % 7 == 0:  # while Gradio calls the handler only now and then, with the newest one
            markdown, _ = handlers.chunk(path, request("a"))
    handlers.chunk(arrivals[-1], request("a"))  # the newest handed over again: nothing is pushed twice
    status, plot, csv_file = handlers.stop(request("a"))  # the rest, at stop
    assert "1 chunk(s) of the browser's audio never reached the Space" in status
    kept = np.concatenate([soundfile.read(p, dtype="int16")[0] for i, p in enumerate(paths) if i != 39])
    expected = StreamScorer(scorer, 1.0)
    updates = expected.push(kept, rate) + expected.flush().updates
    path = csv_file.value["path"] if isinstance(csv_file.value, dict) else csv_file.value
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["end"]) for r in rows] == pytest.approx([u.end for u in updates])
    assert [float(r["score"]) for r in rows] == pytest.approx([u.score for u in updates], abs=1e-5)
    whole = scorer.prepare(kept, rate)  # and those are the offline scores of the same samples
    pieces = [whole[max(0, round((u.end - 7.68) * 16000)) : round(u.end * 16000)] for u in updates]
    assert [u.score for u in updates] == pytest.approx([s.mos for s in scorer.score_prepared(pieces)], abs=1e-5)
    assert not sessions.inbox.knows("a")


def test_inbox_gives_up_a_missing_chunk_only_after_later_ones_arrived():
    inbox = stream_chunks.ChunkInbox()
    name = "/up/{0}/audio-{0:09d}.wav".format
    inbox.record("s", name(7))
    inbox.record("s", name(9))
    assert inbox.take("s") == ([name(7)], 0)  # 8 may still come
    last = 8 + stream_chunks.HOLD_CHUNKS - 1  # 9..last: one fewer than HOLD_CHUNKS waiting behind 8
    for n in range(10, last + 1):
        inbox.record("s", name(n))
    assert inbox.take("s") == ([], 0)
    inbox.record("s", name(8))
    assert inbox.take("s") == ([name(n) for n in range(8, last + 1)], 0)
    inbox.record("s", name(last + 3))
    inbox.record("s", name(last + 4))
    assert inbox.take("s") == ([], 0)
    for n in range(last + 5, last + 3 + stream_chunks.HOLD_CHUNKS):  # HOLD_CHUNKS waiting now: the 2 missing are lost
        inbox.record("s", name(n))
    taken, lost = inbox.take("s")
    assert lost == 2 and taken[0] == name(last + 3)
    inbox.record("s", name(last + 1))  # too late: already counted lost
    inbox.record("s", name(100))
    assert inbox.take("s", final=True) == ([name(100)], 100 - (last + 3 + stream_chunks.HOLD_CHUNKS))


class FakeEvent(SimpleNamespace):
    pass


def asgi_post(middleware, path, body):
    """Sends one POST through the ASGI middleware; returns the body the app behind it received."""
    import asyncio

    got = []

    async def app(scope, receive, send):
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        got.append(b"".join(chunks))

    async def run():
        parts = [body[:10], body[10:]]
        messages = iter([{"type": "http.request", "body": p, "more_body": i == 0} for i, p in enumerate(parts)])

        async def receive():
            return next(messages)

        await stream_chunks.RecordStreamChunks(app)({"type": "http", "method": "POST", "path": path,
                                                     "app": middleware}, receive, None)

    asyncio.run(run())
    return got[0]


def test_middleware_records_only_the_live_events_uploaded_chunks_and_passes_the_request_on(scorer, tmp_path):
    import json

    uploads = tmp_path / "uploads"
    (uploads / "x").mkdir(parents=True)
    chunk = uploads / "x" / "audio.wav"
    soundfile.write(chunk, np.zeros(1600, np.int16), 16000)
    outside = tmp_path / "secret.wav"
    soundfile.write(outside, np.zeros(1600, np.int16), 16000)
    sessions = live.LiveSessions(scorer, settings.Limits())
    sessions.stream_fn = live.LiveHandlers(sessions).chunk
    events = {"ab12": FakeEvent(fn=SimpleNamespace(fn=sessions.stream_fn), session_hash="s1"),
              "cd34": FakeEvent(fn=SimpleNamespace(fn=print), session_hash="s2")}
    blocks = SimpleNamespace(live=sessions, _queue=SimpleNamespace(event_ids_to_events=events),
                             fns={3: SimpleNamespace(fn=sessions.stream_fn), 4: SimpleNamespace(fn=print)})
    app = SimpleNamespace(get_blocks=lambda: blocks, uploaded_file_dir=str(uploads))

    def body(path, session="forged", fn_index=3):
        return json.dumps({"data": [{"path": str(path), "meta": {"_type": "gradio.FileData"}}],
                           "session_hash": session, "fn_index": fn_index}).encode()

    assert asgi_post(app, "/gradio_api/queue/join", body(chunk, "s1")) == body(chunk, "s1")  # the first chunk
    asgi_post(app, "/gradio_api/queue/join", body(chunk, "s3", fn_index=4))  # another function's

    assert asgi_post(app, "/gradio_api/stream/ab12", body(chunk)) == body(chunk)  # Gradio gets it unchanged
    asgi_post(app, "/gradio_api/stream/ab12", body(outside))  # not an upload: never read
    asgi_post(app, "/gradio_api/stream/cd34", body(chunk))  # another event's chunk
    asgi_post(app, "/gradio_api/stream/ef56", body(chunk))  # no such event
    asgi_post(app, "/gradio_api/stream/ab12/close", b"{}")
    assert asgi_post(app, "/gradio_api/stream/ab12", b"not json") == b"not json"
    # /queue/join under the body's session; /stream under the event's, whatever the body says
    assert sessions.inbox.take("s1") == ([str(chunk.resolve())] * 2, 0)
    assert not any(sessions.inbox.knows(s) for s in ("forged", "s2", "s3"))
