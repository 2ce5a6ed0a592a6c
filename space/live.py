"""
The Space's "Live" tab: the microphone scored as it streams, through `distill_mos.stream.StreamScorer` (one window
score per hop, the running MOS, the curve), within `DISTILL_MOS_LIVE_*` limits; stop leaves the curve and a CSV.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from gradio.processing_utils import audio_from_file

from distill_mos import DistillMOSScorer
from distill_mos.stream import StreamScorer, StreamUpdate
from formatting import acr_label, write_csv
from plots import Series, window_plot_svg
from settings import Limits, format_seconds
from stream_chunks import ChunkInbox

logger = logging.getLogger("distill_mos.space")

LIVE_COLUMNS = ["start", "end", "score", "running_mos", "windows", "partial", "warning"]
IDLE_SECONDS = 15.0  # a session that sent nothing for this long (a closed tab) gives its slot back
UPLOAD_MOVE_SECONDS = 2.0  # how long a chunk's file may take to appear where its upload said it would be

# Browsers clean up microphone audio for calls (echo cancellation, noise suppression, automatic gain) unless asked
# not to; that would be scored instead of what the microphone hears. Gradio's recorder asks for `{audio: true}`, so
# the page asks getUserMedia for the raw signal (MediaTrackConstraints) before Gradio's code runs.
RAW_MICROPHONE_HEAD = """
<script>
(() => {
  const media = navigator.mediaDevices;
  if (!media || !media.getUserMedia || media.__distillMosRaw) return;
  const original = media.getUserMedia.bind(media);
  const raw = {echoCancellation: false, noiseSuppression: false, autoGainControl: false};
  media.getUserMedia = (constraints) => {
    if (constraints && constraints.audio) {
      const audio = constraints.audio === true ? {} : constraints.audio;
      constraints = {...constraints, audio: {...audio, ...raw}};
    }
    return original(constraints);
  };
  media.__distillMosRaw = true;
})();
</script>
"""

ABOUT_LIVE = (
    "Speak into the microphone: every {hop} the latest 7.68 s window is scored (before 7.68 s, all the audio so "
    "far, as a short clip), with the running MOS (the mean of the windows so far) and the curve. **Stop** keeps the "
    "curve and gives a CSV. What is scored is the microphone's raw signal: this page asks the browser to turn off "
    "echo cancellation, noise suppression and automatic gain (browsers that ignore the request still apply them). "
    "Sessions last up to {seconds}; {sessions} live session(s) at a time on this Space."
)


@dataclass
class LiveSession:
    """One browser session's stream: its scorer state, the updates so far and when it last sent audio."""

    stream: StreamScorer
    updates: list[StreamUpdate] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    ended: str | None = None  # why the session stopped scoring (limit reached, bad audio)
    lost_chunks: int = 0  # chunks the browser numbered that never reached the Space (stream_chunks.ChunkInbox)


class LiveSessions:
    """At most `Limits.live_sessions` streams at once, each up to `Limits.live_seconds`; keyed by Gradio session."""

    def __init__(self, scorer: DistillMOSScorer, limits: Limits):
        self.scorer, self.limits = scorer, limits
        self._sessions: dict[str, LiveSession] = {}
        self._lock = threading.Lock()
        self.inbox = ChunkInbox()  # every streamed chunk, filled by stream_chunks.RecordStreamChunks
        self.stream_fn = None  # the function of the Live tab's streaming event, set by `live_tab`

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if now - s.last_seen > IDLE_SECONDS]:
            del self._sessions[key]
            self.inbox.discard(key)

    def get(self, key: str) -> LiveSession | None:
        """The session's stream, admitted now if there is room; None when the Space's live sessions are all taken."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            session = self._sessions.get(key)
            if session is None:
                if len(self._sessions) >= self.limits.live_sessions:
                    return None
                session = self._sessions[key] = LiveSession(StreamScorer(self.scorer, self.limits.live_hop))
            session.last_seen = now
            return session

    def end(self, key: str) -> LiveSession | None:
        """Ends the session (its slot is given back); returns it, with the chunks that reached the inbox unpushed."""
        with self._lock:
            return self._sessions.pop(key, None)

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._sessions)


def live_markdown(updates: list[StreamUpdate], note: str | None = None, lost_chunks: int = 0) -> str:
    if lost_chunks:
        lost = (f"⚠️ {lost_chunks} chunk(s) of the browser's audio never reached the Space: the windows around them "
                "miss that audio.")
        note = f"{note}\n\n{lost}" if note else lost
    if not updates:
        return note or "Press **Record**: the first score comes after one second of audio."
    last = updates[-1]
    kind = "all the audio so far (under 7.68 s)" if last.partial else f"window {last.start:.0f}–{last.end:.2f} s"
    lines = [
        f"### Running MOS {last.running_mos:.2f} / 5 — {acr_label(last.running_mos)}",
        "",
        f"Current score **{last.score:.2f}** ({kind}) · {last.end:.0f} s scored · {last.windows} full window(s)",
    ]
    if last.warning:
        lines += ["", f"⚠️ {last.warning}"]
    if note:
        lines += ["", note]
    return "\n".join(lines)


def live_plot(updates: list[StreamUpdate]) -> str | None:
    """The curve: each update's score at the time it was scored (the end of its window), seconds from the start."""
    if not updates:
        return None
    series = Series("live", [u.end for u in updates], [u.score for u in updates])
    return window_plot_svg([series], updates[-1].end, title="Score of each update (live)", x_label="time (s), window end")


def _plot_update(svg: str | None) -> gr.HTML:
    return gr.HTML(value=svg, visible=True) if svg else gr.HTML(value="", visible=False)


Chunk = str | tuple  # a chunk's uploaded WAV file (the page), or (rate, int16 samples[, channels]) (tests, API)


def _samples(chunk: Chunk) -> tuple[int, np.ndarray]:
    """(sampling rate, int16 samples[, channels]): a file read as Gradio reads its type="numpy" audio."""
    if isinstance(chunk, tuple):
        rate, samples = chunk
        return int(rate), np.asarray(samples)
    deadline = time.monotonic() + UPLOAD_MOVE_SECONDS
    while not Path(chunk).is_file() and time.monotonic() < deadline:
        time.sleep(0.01)  # Gradio moves an upload into place after it answered the request
    try:
        rate, samples = audio_from_file(chunk)
    except Exception as error:  # noqa: BLE001 - pydub raises several kinds; the page says it in one line
        raise ValueError(f"the browser sent audio that could not be read ({type(error).__name__})") from error
    return int(rate), samples


class LiveHandlers:
    def __init__(self, sessions: LiveSessions):
        self.sessions = sessions

    def start(self, request: gr.Request):
        """A new recording: a fresh stream (nothing of an earlier one is kept)."""
        self.sessions.end(request.session_hash)
        self.sessions.inbox.discard(request.session_hash)
        return live_markdown([]), _plot_update(None), gr.File(value=None, visible=False)

    def _new_chunks(self, session: LiveSession, key: str, audio: Chunk | None, final: bool = False) -> list[Chunk]:
        """Every chunk of the session not pushed yet, in recording order (the inbox's, or the one Gradio hands over)."""
        inbox = self.sessions.inbox
        if isinstance(audio, tuple) or not inbox.knows(key):  # tests and API calls; no middleware in front
            return [] if audio is None else [audio]
        chunks, lost = inbox.take(key, final)
        session.lost_chunks += lost
        return chunks

    def _push(self, session: LiveSession, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            if session.ended:
                return
            try:
                rate, samples = _samples(chunk)
                session.updates += session.stream.push(samples, rate)
            except ValueError as error:
                session.ended = f"⚠️ Scoring stopped: {error}"
            except Exception as error:  # noqa: BLE001 - the page shows a message, the app keeps serving
                logger.exception("unexpected error in a live session")
                session.ended = f"⚠️ Scoring stopped: unexpected error ({type(error).__name__})."
            limit = self.sessions.limits.live_seconds
            if session.stream.seconds >= limit and not session.ended:
                session.ended = (
                    f"Session limit reached ({format_seconds(limit)}): press **Stop** for the CSV, then "
                    "record again for a new session."
                )

    def chunk(self, audio: Chunk | None, request: gr.Request):
        """Streamed audio -> (Markdown, curve), updated when a hop was scored (else skipped). Never raises."""
        key = request.session_hash
        session = self.sessions.get(key)
        limits = self.sessions.limits
        if session is None:
            self.sessions.inbox.discard(key)
            message = (
                f"### ⚠️ The Space's {limits.live_sessions} live session(s) are all in use\n\nTry again in a minute, "
                "or score a recording on the **One clip** tab."
            )
            return message, gr.skip()
        chunks = self._new_chunks(session, key, audio)
        if session.ended:
            return live_markdown(session.updates, session.ended, session.lost_chunks), gr.skip()
        before = len(session.updates)
        self._push(session, chunks)
        if len(session.updates) == before and not session.ended:
            return gr.skip(), gr.skip()  # no new hop: nothing to redraw (chunks come ten times a second)
        return (live_markdown(session.updates, session.ended, session.lost_chunks),
                _plot_update(live_plot(session.updates)))

    def stop(self, request: gr.Request):
        """Stop: the curve stays, the CSV of every update appears; the session's slot is given back."""
        key = request.session_hash
        session = self.sessions.end(key)
        if session is not None:  # chunks that came after the last call
            self._push(session, self._new_chunks(session, key, None, final=True))
        self.sessions.inbox.discard(key)
        if session is None or not session.updates:
            return "Nothing was scored (under one second of audio).", gr.skip(), gr.File(value=None, visible=False)
        if not session.ended:
            session.updates += session.stream.flush().updates
        path = write_csv([u.as_dict() for u in session.updates], LIVE_COLUMNS, "distill-mos-live.csv")
        return (
            live_markdown(session.updates, "Stopped: the curve and the CSV below are this session's.",
                          session.lost_chunks),
            _plot_update(live_plot(session.updates)),
            gr.File(value=path, visible=True),
        )


def live_tab(sessions: LiveSessions) -> None:
    handlers = LiveHandlers(sessions)
    limits = sessions.limits
    gr.Markdown(ABOUT_LIVE.format(
        hop=format_seconds(limits.live_hop), seconds=format_seconds(limits.live_seconds), sessions=limits.live_sessions
    ))
    microphone = gr.Audio(  # type="filepath": each chunk is read once, by `_samples`, with the inbox's others
        sources=["microphone"], type="filepath", streaming=True, label="Microphone (live)", elem_id="live-input",
        waveform_options=gr.WaveformOptions(sample_rate=48000, show_recording_waveform=False),
    )
    status = gr.Markdown(live_markdown([]), elem_id="live-result")
    curve = gr.HTML(visible=False, elem_id="live-plot", js_on_load=None)
    csv_file = gr.File(label="Download CSV (every update)", interactive=False, visible=False, elem_id="live-csv")
    microphone.start_recording(handlers.start, None, [status, curve, csv_file], api_visibility="private", queue=False)
    # stream_every: Gradio 6.31's recorder sends a chunk every 0.1 s whatever it says (stream_chunks.py keeps them all)
    sessions.stream_fn = microphone.stream(
        handlers.chunk, microphone, [status, curve], stream_every=min(0.5, limits.live_hop),
        time_limit=int(limits.live_seconds) + 5, concurrency_limit=limits.live_sessions, concurrency_id="live",
        api_visibility="private", show_progress="hidden",
    ).fn  # the bound method: Gradio's events hold it as `event.fn.fn`
    microphone.stop_recording(handlers.stop, None, [status, curve, csv_file], api_visibility="private")
