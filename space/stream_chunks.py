"""
Every chunk the browser streams to the Live tab, in the order it was recorded, so that none is lost or reordered on
its way to the handler.

Gradio 6 keeps one slot per streaming event: `POST /gradio_api/stream/{event_id}` overwrites the event's data with
the newest chunk, and the handler is called with whatever is there when it is next free. The browser's recorder sends
a 0.1 s chunk every 0.1 s whatever `stream_every` says, so a chunk that arrives while the handler runs (a window being
scored, a slow moment of a shared machine) is replaced by the next one and never scored: 154 of 280 chunks reached
the handler in one measured session. And each chunk is an upload followed by that POST, several at a time, so they
can arrive out of order (seen here on a loaded machine), and identical chunks (digital silence) share one upload path.

So the page numbers the chunks (`CHUNK_NUMBERING_HEAD`: the recorder names each "audio.wav"; the page names it
"audio-000000042.wav"), `RecordStreamChunks` reads each chunk's request before Gradio does (the first chunk comes
with `/queue/join`, the others with `/stream/{event_id}`) and keeps its uploaded file in a `ChunkInbox`, and the
handler takes every chunk of its session in recording order. A number that never arrives is counted as lost once
`HOLD_CHUNKS` later ones have.

If a later Gradio changes these routes, nothing is recorded and the handler scores the chunks Gradio gives it: the
page keeps working as it did, with the losses. Unnumbered chunks (a client without the page's script) are taken in
arrival order.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("distill_mos.space")

STREAM_ROUTE = re.compile(r"/stream/(?P<event_id>[0-9a-f]+)$")  # not /stream/{event_id}/close
JOIN_ROUTE = re.compile(r"/queue/join$")
CHUNK_NAME = re.compile(r"audio-(?P<number>\d{9})\.wav$")
HOLD_CHUNKS = 5  # a missing chunk is given up for lost once this many later ones arrived (0.5 s of audio)

# Gradio's recorder builds each chunk as `new File(data, "audio.wav")`; the same constructor, with a running number in
# that one name. `instanceof File` keeps answering for every file, made before or after this runs.
CHUNK_NUMBERING_HEAD = """
<script>
(() => {
  if (window.__distillMosChunkNumbers) return;
  window.__distillMosChunkNumbers = true;
  const Original = window.File;
  let number = 0;
  class NumberedFile extends Original {
    constructor(bits, name, options) {
      super(bits, name === "audio.wav" ? `audio-${String(++number).padStart(9, "0")}.wav` : name, options);
    }
    static [Symbol.hasInstance](value) { return value instanceof Original; }
  }
  window.File = NumberedFile;
})();
</script>
"""


@dataclass
class _Pending:
    numbered: dict[int, str] = field(default_factory=dict)  # number -> file, not taken yet
    unnumbered: list[str] = field(default_factory=list)
    next: int | None = None  # the number the session takes next
    lost: int = 0


class ChunkInbox:
    """Uploaded chunk files per Gradio session; thread-safe (requests and handlers run on other threads)."""

    def __init__(self):
        self._sessions: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    def record(self, session: str, path: str) -> None:
        match = CHUNK_NAME.search(path)
        with self._lock:
            pending = self._sessions.setdefault(session, _Pending())
            if match is None:
                pending.unnumbered.append(path)
            elif pending.next is None or int(match["number"]) >= pending.next:  # not one given up for lost
                pending.numbered[int(match["number"])] = path

    def knows(self, session: str) -> bool:
        """Whether any chunk of the session was recorded (since `discard`): the inbox then has them all."""
        with self._lock:
            return session in self._sessions

    def take(self, session: str, final: bool = False) -> tuple[list[str], int]:
        """
        The session's chunks in recording order, as far as they are complete, and how many were found lost since the
        last call. `final`: everything recorded, the missing numbers counted as lost.
        """
        with self._lock:
            pending = self._sessions.get(session)
            if pending is None:
                return [], 0
            chunks, lost = pending.unnumbered, pending.lost
            pending.unnumbered, pending.lost = [], 0
            while pending.numbered:
                first = min(pending.numbered)
                if pending.next is None:
                    pending.next = first
                if pending.next in pending.numbered:
                    chunks.append(pending.numbered.pop(pending.next))
                    pending.next += 1
                elif final or len(pending.numbered) >= HOLD_CHUNKS:
                    lost += first - pending.next
                    pending.next = first
                else:
                    break  # the next one may still come
            return chunks, lost

    def discard(self, session: str) -> None:
        with self._lock:
            self._sessions.pop(session, None)


def _parsed(body: bytes):
    try:
        return json.loads(body)
    except ValueError:
        return None  # not a request of ours: Gradio answers it as it always does


def _chunk_path(request, upload_folder: Path) -> str | None:
    """The uploaded file of a streamed audio chunk (`{"data": [FileData], ...}`), if it lies in Gradio's upload folder."""
    try:
        path = Path(request["data"][0]["path"]).resolve()
    except (KeyError, IndexError, TypeError):
        return None
    # only files Gradio itself stored (maybe still being moved there: Gradio does it after answering the upload); a
    # client must not make the Space read any other file
    return str(path) if path.is_relative_to(upload_folder) else None


class RecordStreamChunks:
    """
    ASGI middleware (`launch(app_kwargs={"middleware": [Middleware(RecordStreamChunks)]})`): for each chunk of the
    Live tab's streaming event (`blocks.live`, a `live.LiveSessions`), records its file in `blocks.live.inbox` under
    the event's session, then hands the request on to Gradio unchanged.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" and scope.get("method") == "POST" else ""
        stream, join = STREAM_ROUTE.search(path), JOIN_ROUTE.search(path)
        if not (stream or join):
            await self.app(scope, receive, send)
            return
        messages, body = [], b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        try:
            self._record(scope["app"], stream["event_id"] if stream else None, body)
        except Exception:  # noqa: BLE001 - recording is an addition: Gradio still gets the chunk
            logger.exception("could not record a live chunk")
        replay = iter(messages)

        async def replayed():
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)

    @staticmethod
    def _record(app, event_id: str | None, body: bytes) -> None:
        blocks = app.get_blocks()
        live = getattr(blocks, "live", None)
        if live is None:
            return
        request = None  # the body, parsed once, and only when it may be the Live event's
        if event_id is None:  # /queue/join: the event's first chunk, for the function and session the body names
            request = _parsed(body)
            try:
                fn, session = blocks.fns.get(request["fn_index"]), request["session_hash"]
            except (KeyError, TypeError):
                return
        else:  # /stream/{event_id}: as Gradio's own route finds the event
            event = blocks._queue.event_ids_to_events.get(event_id)
            fn, session = (event.fn, event.session_hash) if event is not None else (None, None)
        if getattr(fn, "fn", None) != live.stream_fn or not isinstance(session, str):
            return
        path = _chunk_path(request if request is not None else _parsed(body), Path(app.uploaded_file_dir).resolve())
        if path is not None:
            live.inbox.record(session, path)
