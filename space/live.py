"""
The Space's "Live" tab: the microphone scored as it streams, through `distill_mos.stream.StreamScorer` (one window
score per hop, the running MOS, the curve), within `DISTILL_MOS_LIVE_*` limits; stop leaves the curve and a CSV.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import gradio as gr
import numpy as np

from distill_mos import DistillMOSScorer
from distill_mos.stream import StreamScorer, StreamUpdate
from formatting import acr_label, write_csv
from plots import Series, window_plot_svg
from settings import Limits, format_seconds

logger = logging.getLogger("distill_mos.space")

LIVE_COLUMNS = ["start", "end", "score", "running_mos", "windows", "partial", "warning"]
IDLE_SECONDS = 15.0  # a session that sent nothing for this long (a closed tab) gives its slot back

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


class LiveSessions:
    """At most `Limits.live_sessions` streams at once, each up to `Limits.live_seconds`; keyed by Gradio session."""

    def __init__(self, scorer: DistillMOSScorer, limits: Limits):
        self.scorer, self.limits = scorer, limits
        self._sessions: dict[str, LiveSession] = {}
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if now - s.last_seen > IDLE_SECONDS]:
            del self._sessions[key]

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
        with self._lock:
            return self._sessions.pop(key, None)

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._sessions)


def live_markdown(updates: list[StreamUpdate], note: str | None = None) -> str:
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


class LiveHandlers:
    def __init__(self, sessions: LiveSessions):
        self.sessions = sessions

    def start(self, request: gr.Request):
        """A new recording: a fresh stream (nothing of an earlier one is kept)."""
        self.sessions.end(request.session_hash)
        return live_markdown([]), _plot_update(None), gr.File(value=None, visible=False)

    def chunk(self, audio, request: gr.Request):
        """One streamed chunk, (rate, int16 samples[, channels]) -> (Markdown, curve). Never raises."""
        if audio is None:
            return gr.skip(), gr.skip()
        session = self.sessions.get(request.session_hash)
        limits = self.sessions.limits
        if session is None:
            message = (
                f"### ⚠️ The Space's {limits.live_sessions} live session(s) are all in use\n\nTry again in a minute, "
                "or score a recording on the **One clip** tab."
            )
            return message, gr.skip()
        if session.ended:
            return live_markdown(session.updates, session.ended), gr.skip()
        rate, samples = audio
        try:
            session.updates += session.stream.push(np.asarray(samples), int(rate))
        except ValueError as error:
            session.ended = f"⚠️ Scoring stopped: {error}"
        except Exception as error:  # noqa: BLE001 - the page shows a message, the app keeps serving
            logger.exception("unexpected error in a live session")
            session.ended = f"⚠️ Scoring stopped: unexpected error ({type(error).__name__})."
        if session.stream.seconds >= limits.live_seconds and not session.ended:
            session.ended = (
                f"Session limit reached ({format_seconds(limits.live_seconds)}): press **Stop** for the CSV, then "
                "record again for a new session."
            )
        return live_markdown(session.updates, session.ended), _plot_update(live_plot(session.updates))

    def stop(self, request: gr.Request):
        """Stop: the curve stays, the CSV of every update appears; the session's slot is given back."""
        session = self.sessions.end(request.session_hash)
        if session is None or not session.updates:
            return "Nothing was scored (under one second of audio).", gr.skip(), gr.File(value=None, visible=False)
        if not session.ended:
            session.updates += session.stream.flush().updates
        path = write_csv([u.as_dict() for u in session.updates], LIVE_COLUMNS, "distill-mos-live.csv")
        return (
            live_markdown(session.updates, "Stopped: the curve and the CSV below are this session's."),
            _plot_update(live_plot(session.updates)),
            gr.File(value=path, visible=True),
        )


def live_tab(sessions: LiveSessions) -> None:
    handlers = LiveHandlers(sessions)
    limits = sessions.limits
    gr.Markdown(ABOUT_LIVE.format(
        hop=format_seconds(limits.live_hop), seconds=format_seconds(limits.live_seconds), sessions=limits.live_sessions
    ))
    microphone = gr.Audio(
        sources=["microphone"], type="numpy", streaming=True, label="Microphone (live)", elem_id="live-input",
        waveform_options=gr.WaveformOptions(sample_rate=48000),
    )
    status = gr.Markdown(live_markdown([]), elem_id="live-result")
    curve = gr.HTML(visible=False, elem_id="live-plot", js_on_load=None)
    csv_file = gr.File(label="Download CSV (every update)", interactive=False, visible=False, elem_id="live-csv")
    microphone.start_recording(handlers.start, None, [status, curve, csv_file], api_visibility="private", queue=False)
    microphone.stream(
        handlers.chunk, microphone, [status, curve], stream_every=min(0.5, limits.live_hop),
        time_limit=int(limits.live_seconds) + 5, concurrency_limit=limits.live_sessions, concurrency_id="live",
        api_visibility="private", show_progress="hidden",
    )
    microphone.stop_recording(handlers.stop, None, [status, curve, csv_file], api_visibility="private")
